package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
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
// responder's (see stuckLoops). If one hangs, the pings stop and systemd
// restarts the daemon.
type watchdog struct{ d *Daemon }

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
	if stuck := w.d.stuckLoops(now, interval/2); len(stuck) > 0 {
		w.d.log.Error("a main loop is stuck: not pinging the systemd watchdog", "loops", stuck)
		return
	}
	w.d.seams.notify("WATCHDOG=1")
}

// stuckLoops names the loops that do the work and have hung for longer
// than limit, for the watchdog: gossip's and the repointer's, which turn
// at least every tick (a loop that has not turned yet is not stuck: it has
// not started, and systemd's start timeout bounds that), and each
// responder's, which waits for frames as long as its segment is quiet, so
// only time spent on one piece of work (a read's frames, opening its
// interface) counts.
func (d *Daemon) stuckLoops(now time.Time, limit time.Duration) []string {
	var stuck []string
	turned := func(name string, beat time.Time) {
		if beat.UnixNano() != 0 && now.Sub(beat) > limit {
			stuck = append(stuck, fmt.Sprintf("%s (last turned %s ago)", name, now.Sub(beat).Round(time.Millisecond)))
		}
	}
	turned("gossip", d.cluster.Heartbeat())
	turned("repointer", d.repointer.Heartbeat())
	if busy := d.views.Busy(); !busy.IsZero() && now.Sub(busy) > limit {
		stuck = append(stuck, fmt.Sprintf("%s (busy for %s)", d.views, now.Sub(busy).Round(time.Millisecond)))
	}
	for _, r := range d.responders.Snapshot() {
		if busy := r.Busy(); !busy.IsZero() && now.Sub(busy) > limit {
			stuck = append(stuck, fmt.Sprintf("%s (busy for %s)", r, now.Sub(busy).Round(time.Millisecond)))
		}
	}
	slices.Sort(stuck)
	return stuck
}
