package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/arpshare/arpshare/daemon/repoint"
	"github.com/arpshare/arpshare/gossip"
)

// sdNotify tells systemd the daemon's state (READY=1, STATUS=...), if it
// runs under systemd.
func sdNotify(log *slog.Logger) func(string) {
	return func(state string) {
		if _, err := daemon.SdNotify(false, state); err != nil {
			log.Debug("notify systemd", "error", err)
		}
	}
}

// watchdog pings systemd's watchdog (WatchdogSec=) while the loops that do
// the work still turn: the gossip loop, the re-pointing loop and every
// responder's (see loops.stuck). If one hangs, the pings stop and systemd
// restarts the daemon.
type watchdog struct {
	log    *slog.Logger
	notify func(state string)
	loops  loops
}

// loops are the loops that do the work, as the watchdog watches them.
type loops struct {
	cluster    *gossip.Cluster
	repointer  *repoint.Repointer
	views      *viewTask
	responders *responders
}

func (d *Daemon) newWatchdog() *watchdog {
	return &watchdog{log: d.log, notify: d.seams.notify, loops: loops{d.cluster, d.repointer, d.views, d.responders}}
}

func (w *watchdog) String() string { return "watchdog" }

func (w *watchdog) Run(ctx context.Context) error {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(interval / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			w.check(now, interval)
		}
	}
}

// check pings unless a main loop has hung for half the interval. A loop
// that has not started yet (gossip joins its peers first, which may take a
// TCP timeout) is not stuck: systemd's start timeout bounds that.
func (w *watchdog) check(now time.Time, interval time.Duration) {
	if stuck := w.loops.stuck(now, interval/2); len(stuck) > 0 {
		w.log.Error("a main loop is stuck: not pinging the systemd watchdog", "loops", stuck)
		return
	}
	w.notify("WATCHDOG=1")
}

// stuck names the loops that do the work and have hung for longer
// than limit, for the watchdog: gossip's and the repointer's, which turn
// at least every tick (a loop that has not turned yet is not stuck: it has
// not started, and systemd's start timeout bounds that), and each
// responder's, which waits for frames as long as its segment is quiet, so
// only time spent on one piece of work (a read's frames, opening its
// interface) counts.
func (l loops) stuck(now time.Time, limit time.Duration) []string {
	var stuck []string
	turned := func(name string, beat time.Time) {
		if beat.UnixNano() != 0 && now.Sub(beat) > limit {
			stuck = append(stuck, fmt.Sprintf("%s (last turned %s ago)", name, now.Sub(beat).Round(time.Millisecond)))
		}
	}
	turned("gossip", l.cluster.Heartbeat())
	turned("repointer", l.repointer.Heartbeat())
	if busy := l.views.Busy(); !busy.IsZero() && now.Sub(busy) > limit {
		stuck = append(stuck, fmt.Sprintf("%s (busy for %s)", l.views, now.Sub(busy).Round(time.Millisecond)))
	}
	for _, r := range l.responders.Snapshot() {
		if busy := r.Busy(); !busy.IsZero() && now.Sub(busy) > limit {
			stuck = append(stuck, fmt.Sprintf("%s (busy for %s)", r, now.Sub(busy).Round(time.Millisecond)))
		}
	}
	slices.Sort(stuck)
	return stuck
}
