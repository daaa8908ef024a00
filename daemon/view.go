package daemon

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/arpshare/arpshare/daemon/handover"
	"github.com/arpshare/arpshare/daemon/repoint"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/config"
)

// viewChanged is the path of a failover through the daemon. Gossip hands
// it each new view on its own loop, so it does only what does not grow with
// the client table: it logs what an operator must hear of, gives the view
// to every responder (whom to answer from the next frame on: a pointer
// swap each), and leaves it to the views task for the handover and the
// repointer.
func (d *Daemon) viewChanged(v *gossip.View) {
	d.watch.observe(d.log, v, d.config().VIPs)
	d.responders.setView(v)
	d.spread.ViewChanged(v)
	d.views.publish(v)
	d.seams.notify("STATUS=" + d.statusLine())
}

// viewTask hands each new view to the handover (whose flows go back to
// their previous owner), then to the repointer (which clients to re-point
// here), on a goroutine of its own: the handover's update copies and
// hashes the client table, and gossip's loop must not wait for it. A view
// that comes while it works replaces the one waiting: the latest is what
// counts, as in the repointer's own mailbox.
type viewTask struct {
	handover  *handover.Handover
	repointer *repoint.Repointer
	latest    atomic.Pointer[gossip.View]
	wake      chan struct{}
	busy      atomic.Int64 // Unix ns the work in hand began; 0 while waiting
}

func newViewTask(h *handover.Handover, r *repoint.Repointer) *viewTask {
	return &viewTask{handover: h, repointer: r, wake: make(chan struct{}, 1)}
}

// publish makes v the view to hand on; it never blocks.
func (t *viewTask) publish(v *gossip.View) {
	t.latest.Store(v)
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *viewTask) String() string { return "view consumer" }

// Busy is when the work in hand began; zero while it waits.
func (t *viewTask) Busy() time.Time {
	if b := t.busy.Load(); b != 0 {
		return time.Unix(0, b)
	}
	return time.Time{}
}

// Run hands the views on until ctx ends.
func (t *viewTask) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.wake:
		}
		t.busy.Store(time.Now().UnixNano())
		v := t.latest.Load()
		t.handover.Update(v) // before re-pointing: a moved client's flows must be handed over at once
		t.repointer.ViewChanged(v)
		t.busy.Store(0)
	}
}

// viewWatch logs what an operator must hear of in a new view: quorum lost
// or regained, VIPs that no host passes the check of, untrusted members.
// Only gossip's goroutine calls it.
type viewWatch struct {
	quorum   bool
	fallback map[netip.Addr]bool
	rejected map[string]string // why each member's metadata is rejected
}

func (w *viewWatch) observe(log *slog.Logger, v *gossip.View, vips []config.VIP) {
	switch {
	case w.quorum != v.Quorum() && !v.Quorum():
		log.Error("lost quorum: this host sees fewer than a majority of the expected hosts and stops answering", "alive", v.Alive(), "expect", v.Expect)
	case w.quorum != v.Quorum():
		log.Info("quorum regained: answering again", "alive", v.Alive(), "expect", v.Expect)
	}
	w.quorum = v.Quorum()
	var fallbackNow, fallbackOver []string
	for _, vip := range vips {
		if fb := v.Fallback(vip.Address); fb != w.fallback[vip.Address] {
			w.fallback[vip.Address] = fb
			if fb {
				fallbackNow = append(fallbackNow, vip.Name)
			} else {
				fallbackOver = append(fallbackOver, vip.Name)
			}
		}
	}
	if len(fallbackNow) > 0 {
		log.Error("no host passes the health check: every live host answers anyway", "vips", fallbackNow)
	}
	if len(fallbackOver) > 0 {
		log.Info("a host passes the health check again", "vips", fallbackOver)
	}
	var hosts []string
	for _, m := range v.Members {
		hosts = append(hosts, m.Name+"="+string(m.State))
	}
	w.observeRejected(log, v)
	log.Info("cluster view changed", "members", strings.Join(hosts, " "))
}

// observeRejected logs each member whose metadata is rejected once per
// cause, and when it is trusted again: a peer can change views as often as
// it likes.
func (w *viewWatch) observeRejected(log *slog.Logger, v *gossip.View) {
	if w.rejected == nil {
		w.rejected = map[string]string{}
	}
	now := map[string]string{}
	for _, m := range v.Members {
		if m.Err == "" {
			continue
		}
		now[m.Name] = m.Err
		if w.rejected[m.Name] != m.Err {
			log.Error("member rejected: its gossiped metadata is not trusted; it gets no clients and does not count toward quorum",
				"member", m.Name, "address", m.Addr, "reason", m.Reason, "error", m.Err)
		}
	}
	for name := range w.rejected {
		if _, still := now[name]; !still {
			if m, ok := v.Member(name); ok && m.State == gossip.StateAlive {
				log.Info("member trusted again: its metadata is in range", "member", name)
			}
		}
	}
	w.rejected = now
}
