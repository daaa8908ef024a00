package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"time"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/gossip"
)

// Re-pointing: when ownership of a known client moves to this host, the
// client still has the old owner's MAC cached (possibly a dead host), so this
// host sends it a unicast gratuitous ARP. One packet can be lost, so each
// client gets a few, spaced; the whole burst is paced so that a big client
// table does not flood the segment.
const (
	repointRounds  = 3                      // packets per client
	repointSpacing = 250 * time.Millisecond // between a client's packets
	repointRate    = 5000                   // packets per second at most
	expireEvery    = time.Minute            // how often stale clients are forgotten
)

type clientKey struct{ vip, ip netip.Addr }

// Repointer sends gratuitous ARP to the clients this host newly owns.
type Repointer struct {
	Table  *arp.ClientTable
	View   func() *gossip.View
	Send   func(vip netip.Addr, c arp.Client) error
	Logger *slog.Logger

	kick    chan struct{}
	last    *gossip.View
	pending map[clientKey]int // rounds left per client
}

// NewRepointer returns a repointer; Run starts it.
func NewRepointer(r Repointer) *Repointer {
	r.kick = make(chan struct{}, 1)
	r.pending = map[clientKey]int{}
	return &r
}

func (r *Repointer) String() string { return "repointer" }

// ViewChanged tells the repointer to look at the current view. It never blocks.
func (r *Repointer) ViewChanged(*gossip.View) {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run re-points clients until ctx ends.
func (r *Repointer) Run(ctx context.Context) error {
	rounds := time.NewTicker(repointSpacing)
	defer rounds.Stop()
	expire := time.NewTicker(expireEvery)
	defer expire.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
			v := r.View()
			r.plan(v, r.Table.Clients())
			r.round(ctx, v)
		case <-rounds.C:
			r.round(ctx, r.View())
		case now := <-expire.C:
			if n := r.Table.Expire(now); n > 0 {
				r.Logger.Debug("forgot stale clients", "count", n)
			}
		}
	}
}

// plan queues the clients that v gives to this host and the previous view
// did not.
func (r *Repointer) plan(v *gossip.View, clients []arp.Client) {
	n := 0
	for _, c := range clients {
		if v.Owns(c.VIP, c.IP) && !r.last.Owns(c.VIP, c.IP) {
			r.pending[clientKey{c.VIP, c.IP}] = repointRounds
			n++
		}
	}
	if n > 0 {
		r.Logger.Info("re-pointing clients to this host", "clients", n)
	}
	r.last = v
}

// round sends one packet to every pending client that this host still owns.
func (r *Repointer) round(ctx context.Context, v *gossip.View) {
	start, sent := time.Now(), 0
	for k, left := range r.pending {
		c, known := r.Table.Get(k.vip, k.ip)
		if !known || !v.Owns(k.vip, k.ip) {
			delete(r.pending, k)
			continue
		}
		if err := r.Send(k.vip, c); err != nil {
			r.Logger.Warn("re-point client", "vip", k.vip, "client", k.ip, "error", err)
		}
		if left <= 1 {
			delete(r.pending, k)
		} else {
			r.pending[k] = left - 1
		}
		sent++
		if sent%100 == 0 {
			// Pace to repointRate: wait until the packets sent so far are due.
			due := start.Add(time.Duration(sent) * time.Second / repointRate)
			if d := time.Until(due); d > 0 && !sleepCtx(ctx, d) {
				return
			}
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
