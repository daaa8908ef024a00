package daemon

import (
	"context"
	"time"

	"github.com/arpshare/arpshare/daemon/repoint"
	"github.com/arpshare/arpshare/gossip"
)

// repointReports gossips the digest of each view whose re-pointing is done
// here, for the drains of the other hosts, and this host's metadata again
// when the spreader no longer holds a routed VIP. The repointer's loop and
// the spreader tell it; the update waits for its broadcast on this task's
// goroutine.
type repointReports struct {
	state   *hostState
	cluster *gossip.Cluster
	changed chan struct{}
}

var _ repoint.Progress = (*repointReports)(nil)

func newRepointReports(state *hostState) *repointReports {
	return &repointReports{state: state, changed: make(chan struct{}, 1)}
}

func (r *repointReports) String() string { return "re-pointing reports" }

func (r *repointReports) Repointed(digest uint32) {
	r.state.setRepointed(digest)
	r.metaChanged()
}

// metaChanged has this host's metadata gossiped again; it never blocks.
func (r *repointReports) metaChanged() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *repointReports) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.changed:
			r.cluster.UpdateMeta(500 * time.Millisecond) // unconfirmed: the cluster sends it again
		}
	}
}

// leaveState is what hostState gossips for drains: whether this host asks
// to drain or stops (gossip.Meta.Leaving), and the digest of the last view
// it has re-pointed (gossip.Meta.Repointed).
type leaveState struct {
	leaving   bool
	repointed uint32
}

func (s *hostState) SetLeaving(leaving bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leave.leaving = leaving
}

func (s *hostState) setRepointed(digest uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leave.repointed = digest
}

// SetStopping drains a stopping host, or lets it answer again, and says
// whether that changed.
func (s *hostState) SetStopping(stopping bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := s.stopping != stopping
	s.stopping = stopping
	return changed
}

// SetDrained drains this host (or resumes it): see drain.Drainer.Set.
func (d *Daemon) SetDrained(ctx context.Context, drained, force bool) error {
	return d.drainer.Set(ctx, drained, force)
}
