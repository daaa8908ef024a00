package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/gossip"
)

// Re-pointing: when ownership of a known client moves to this host, the
// client still has the old owner's MAC cached (possibly a dead host), so this
// host sends it a unicast gratuitous ARP. One packet can be lost, so each
// client gets a few, spaced; the whole burst is paced so that a big client
// table does not flood the segment. A health check that flaps is damped by
// its rise/fall counts before it gets here.
const (
	repointRounds  = 3                      // packets per client
	repointSpacing = 250 * time.Millisecond // between a client's packets
	repointRate    = 5000                   // packets per second at most
	// A single-mode VIP taking over is announced by broadcast, as MetalLB
	// does, several times over more than a second, for the machines that
	// miss one.
	announceCount   = 4
	announceSpacing = 500 * time.Millisecond
	// While hosts' views differ (a host joining, a check changing), a
	// client may be answered by a host that soon no longer owns it, and the
	// owner does not know to re-point it. So once the eligible hosts of a
	// VIP have been stable this long, every owner re-points each of its
	// clients once more. It must outlast a metadata update that has to be
	// sent twice (the first unconfirmed after 500 ms, see
	// gossip.Cluster.UpdateMeta): a host that settles on a view that old
	// pulls back clients their new owner has just taken.
	settleDelay = 2 * time.Second
	expireEvery = time.Minute // how often stale clients are forgotten
)

type clientKey struct{ vip, ip netip.Addr }

// Repointer sends gratuitous ARP when the view gives this host clients.
type Repointer struct {
	Table     *arp.ClientTable
	Mode      func(vip netip.Addr) gossip.Mode
	VIPs      func() []netip.Addr // the VIPs served now
	View      func() *gossip.View
	Send      func(vip netip.Addr, c arp.Client) error // unicast to one client
	Broadcast func(vip netip.Addr) error               // to the whole segment
	Logger    *slog.Logger

	kick     chan struct{}
	last     *gossip.View
	pending  map[clientKey]int // rounds left per client
	announce map[netip.Addr]announcement
	// VIPs whose eligible hosts changed, and when to settle them.
	unsettled map[netip.Addr]bool
	settleAt  time.Time
	heartbeat *atomic.Int64 // Unix ns of the last loop turn
}

// Heartbeat returns when the repointer's loop last turned.
func (r *Repointer) Heartbeat() time.Time { return time.Unix(0, r.heartbeat.Load()) }

type announcement struct {
	left int
	next time.Time
}

// NewRepointer returns a repointer; Run starts it.
func NewRepointer(r Repointer) *Repointer {
	r.kick = make(chan struct{}, 1)
	r.pending = map[clientKey]int{}
	r.announce = map[netip.Addr]announcement{}
	r.unsettled = map[netip.Addr]bool{}
	r.heartbeat = new(atomic.Int64)
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
		r.heartbeat.Store(time.Now().UnixNano())
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
			v := r.View()
			r.plan(v, r.Table.Clients(), time.Now())
			r.round(ctx, v, time.Now())
		case now := <-rounds.C:
			r.round(ctx, r.View(), now)
		case now := <-expire.C:
			if n := r.Table.Expire(now); n > 0 {
				r.Logger.Debug("forgot stale clients", "count", n)
			}
		}
	}
}

// claims reports whether this host should re-point client c of vip in v.
// In race mode every eligible host answers, so nobody knows whom a client
// picked; when a host is lost, its clients (and, as a harmless side effect,
// some others) are re-pointed by their rendezvous owner among the rest.
func (r *Repointer) claims(v *gossip.View, vip, c netip.Addr) bool {
	mode := r.Mode(vip)
	if mode == gossip.ModeRace {
		return v.Serving() && v.Owner(vip, mode, c) == v.Self
	}
	return v.Answers(vip, mode, c)
}

// plan queues what v gives this host that the previous view did not.
func (r *Repointer) plan(v *gossip.View, clients []arp.Client, now time.Time) {
	lost := map[netip.Addr]bool{} // race VIPs that lost an eligible host
	for _, vip := range r.VIPs() {
		mode := r.Mode(vip)
		if !slices.Equal(v.Eligible(vip), r.last.Eligible(vip)) && mode != gossip.ModeRace {
			r.unsettled[vip] = true
			r.settleAt = now.Add(settleDelay)
		}
		switch mode {
		case gossip.ModeSingle:
			if v.Answers(vip, mode, netip.Addr{}) && !r.last.Answers(vip, mode, netip.Addr{}) {
				r.Logger.Info("taking over single-mode VIP", "vip", vip)
				r.announce[vip] = announcement{left: announceCount, next: now}
			}
		case gossip.ModeRace:
			for _, c := range r.last.Eligible(vip) {
				if !slices.Contains(v.Eligible(vip), c) {
					lost[vip] = true
				}
			}
		}
	}
	n := 0
	for _, c := range clients {
		switch r.Mode(c.VIP) {
		case gossip.ModeSingle:
			continue
		case gossip.ModeRace:
			if !lost[c.VIP] || !r.claims(v, c.VIP, c.IP) {
				continue
			}
		default:
			if !v.Answers(c.VIP, gossip.ModeHash, c.IP) || r.last.Answers(c.VIP, gossip.ModeHash, c.IP) {
				continue
			}
		}
		r.pending[clientKey{c.VIP, c.IP}] = repointRounds
		n++
	}
	if n > 0 {
		r.Logger.Info("re-pointing clients to this host", "clients", n)
	}
	r.last = v
}

// round sends one packet to every pending client that this host still
// claims, and any announcement that is due.
func (r *Repointer) round(ctx context.Context, v *gossip.View, now time.Time) {
	if len(r.unsettled) > 0 && !now.Before(r.settleAt) {
		r.settle(v, now)
	}
	for vip, a := range r.announce {
		switch {
		case !v.Answers(vip, gossip.ModeSingle, netip.Addr{}):
			delete(r.announce, vip)
		case !now.Before(a.next):
			if err := r.Broadcast(vip); err != nil {
				r.Logger.Warn("announce VIP", "vip", vip, "error", err)
			}
			if a.left <= 1 {
				delete(r.announce, vip)
			} else {
				r.announce[vip] = announcement{left: a.left - 1, next: a.next.Add(announceSpacing)}
			}
		}
	}

	start, sent := time.Now(), 0
	for k, left := range r.pending {
		c, known := r.Table.Get(k.vip, k.ip)
		if !known || !r.claims(v, k.vip, k.ip) {
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

// settle re-points, once, every client of the unsettled VIPs that this host
// owns, and announces the single-mode ones it holds.
func (r *Repointer) settle(v *gossip.View, now time.Time) {
	n := 0
	for _, c := range r.Table.Clients() {
		k := clientKey{c.VIP, c.IP}
		if r.unsettled[c.VIP] && r.Mode(c.VIP) == gossip.ModeHash && r.claims(v, c.VIP, c.IP) && r.pending[k] == 0 {
			r.pending[k] = 1
			n++
		}
	}
	for vip := range r.unsettled {
		if _, ok := r.announce[vip]; !ok && r.Mode(vip) == gossip.ModeSingle && v.Answers(vip, gossip.ModeSingle, netip.Addr{}) {
			r.announce[vip] = announcement{left: 1, next: now}
		}
	}
	if n > 0 {
		r.Logger.Debug("cluster settled: re-pointing this host's clients once more", "clients", n)
	}
	clear(r.unsettled)
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
