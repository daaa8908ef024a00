package daemon

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/arpshare/arpshare/daemon/repoint"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/bpf/handover"
	"github.com/arpshare/arpshare/internal/bpf/spread"
)

// viewChanged is the path of a failover through the daemon. Gossip hands
// it each new view on its own loop, so it does only what does not grow with
// the client table: it logs what an operator must hear of, gives the view
// to every responder (whom to answer from the next frame on: a pointer
// swap each), and leaves it to the views task for the handover and the
// repointer.
func (d *Daemon) viewChanged(v *gossip.View) {
	d.watch.Observe(d.log, v, d.config().VIPs)
	d.responders.setView(v)
	d.spread.ViewChanged(v)
	d.propose.ViewChanged(v)
	d.views.publish(v)
	d.seams.notify("STATUS=" + d.statusLine())
}

// viewTask hands each new view to the spreader (routed flows spread by
// it), the handover (whose flows go back to their previous owner), then to
// the repointer (which clients to re-point here), on a goroutine of its
// own: the spread tables and the handover's update take time (a table, and
// a copy of the client table), and gossip's loop must not wait for them. A view
// that comes while it works replaces the one waiting: the latest is what
// counts, as in the repointer's own mailbox.
type viewTask struct {
	spread    *spread.Spreader
	handover  *handover.Handover
	repointer *repoint.Repointer
	latest    atomic.Pointer[gossip.View]
	wake      chan struct{}
	busy      atomic.Int64 // Unix ns the work in hand began; 0 while waiting
}

func newViewTask(s *spread.Spreader, h *handover.Handover, r *repoint.Repointer) *viewTask {
	return &viewTask{spread: s, handover: h, repointer: r, wake: make(chan struct{}, 1)}
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
		t.spread.Sync()      // before re-pointing: a router re-pointed here must find its flows spread
		t.handover.Update(v) // before re-pointing: a moved client's flows must be handed over at once
		t.repointer.ViewChanged(v)
		t.busy.Store(0)
	}
}
