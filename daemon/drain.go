package daemon

import (
	"context"

	"github.com/arpshare/arpshare/internal/clock"
)

// SetDrained drains this host (or resumes it). The state is written to disk
// first, so that it survives a restart. Draining returns once the other
// hosts have had the time to re-point this host's clients.
func (d *Daemon) SetDrained(ctx context.Context, drained bool) error {
	changed, err := d.state.setDrained(drained)
	if err != nil || !changed {
		return err
	}
	if drained {
		d.log.Info("draining: other hosts take this host's clients")
	} else {
		d.log.Info("resuming: taking this host's clients back")
	}
	if err := d.cluster.UpdateMeta(d.seams.drainWait); err != nil {
		d.log.Warn("gossip drain state", "error", err)
	}
	if drained {
		clock.Sleep(ctx, d.seams.drainWait)
	}
	return nil
}
