package daemon

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/arpshare/arpshare/daemon/repoint"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/api"
	"github.com/arpshare/arpshare/internal/clock"
	"github.com/arpshare/arpshare/internal/config"
)

// Draining and stopping never leave a VIP to nobody unless the operator
// says so (`arpshare drain --force`):
//
//   - A host that would be the last eligible host of a VIP refuses to
//     drain, and stops without draining; if others stop too, it first
//     waits a little for one of them to come back (see stopDrain).
//   - Two hosts leaving at once each see the other still eligible. So a
//     host first says it is leaving (gossip.Meta.Leaving, which changes no
//     eligibility), waits for that and the others' answers to spread
//     (drainWait), and looks again: another leaving host counts as staying
//     only if its name sorts after this host's. Of hosts leaving at once,
//     the one whose name sorts last stays.
//   - While a host stops, it drains only as long as another host stays
//     eligible for each of its VIPs: if the others go (a restart of the
//     whole fleet at once), it answers again until it exits.
//
// A drain then waits for the truth: each host gossips the digest of the
// last view it has finished re-pointing (gossip.Meta.Repointed), and the
// draining host is done when every peer that serves its VIPs reports the
// digest of its own view.

// repointStopWait bounds how long a stopping host waits for its peers to
// re-point its clients, or, the last eligible host, for another host to
// come back: with the settle wait (drainWait), handover.stop_wait
// (30 s by default) and the leave, a stop stays under the unit's
// TimeoutStopSec= (45 s).
const repointStopWait = 10 * time.Second

// orphans returns the VIPs of vips that no host but self would answer if
// self stopped answering: no other member that is live (as in eligibility:
// alive and trusted, reachable from here or not), not draining, and serves
// the VIP (healthy or not: if no host passes a check, the others answer
// anyway), counting a member that is leaving too only if its name sorts
// after self's.
func orphans(v *gossip.View, self string, vips []config.VIP) []config.VIP {
	var out []config.VIP
	for _, vip := range vips {
		if !slices.ContainsFunc(v.Members, func(m gossip.Member) bool {
			return m.Name != self && m.Live() && !m.Meta.Draining && m.Serves(vip.Address) &&
				(!m.Meta.Leaving || m.Name > self)
		}) {
			out = append(out, vip)
		}
	}
	return out
}

// drainLock serialises drains and resumes: each takes seconds.
type drainLock struct{ sync.Mutex }

// SetDrained drains this host (or resumes it). Unless force is set, a drain
// that would leave a VIP with no eligible host is refused with a
// *RefusedError. The state is written to disk first, so that it survives a
// restart. It returns once the cluster has been told; DrainProgress says
// when the others have taken this host's clients.
func (d *Daemon) SetDrained(ctx context.Context, drained, force bool) error {
	d.drainLock.Lock()
	defer d.drainLock.Unlock()
	if drained && d.state.Draining() {
		return nil
	}
	if drained && !force {
		vs := d.mayLeave(ctx)
		d.state.setLeaving(false) // the drain flag replaces it, or nothing does
		switch {
		case ctx.Err() != nil:
			d.updateMeta("drain cancelled")
			return fmt.Errorf("drain cancelled: %w", ctx.Err())
		case len(vs) > 0:
			d.updateMeta("drain refused")
			d.log.Warn("drain refused: this host is the last eligible host", "vips", vipNames(vs))
			return &api.RefusedError{VIPs: vs}
		}
	}
	changed, err := d.state.setDrained(drained)
	switch {
	case err != nil:
	case !drained && changed:
		d.log.Info("resuming: taking this host's clients back")
	case force:
		d.log.Warn("draining by force: other hosts take this host's clients, if there are any")
	case drained:
		d.log.Info("draining: other hosts take this host's clients")
	}
	if changed || drained {
		d.updateMeta("drain state")
	}
	return err
}

// mayLeave says whether this host may stop answering: it returns the VIPs
// it would leave to nobody. Unless it is the last at once, it tells the
// cluster it is leaving and looks again once that and the others' news
// have spread (see the comment at the top). Leaving stays set.
func (d *Daemon) mayLeave(ctx context.Context) []config.VIP {
	self, vips := d.config().Node.Name, d.config().VIPs
	if vs := orphans(d.cluster.View(), self, vips); len(vs) > 0 {
		return vs
	}
	d.state.setLeaving(true)
	d.updateMeta("leaving")
	clock.Sleep(ctx, d.seams.drainWait)
	return orphans(d.cluster.View(), self, vips)
}

func (d *Daemon) updateMeta(what string) {
	if err := d.cluster.UpdateMeta(d.seams.drainWait); err != nil {
		d.log.Warn("gossip "+what, "error", err)
	}
}

func vipNames(vs []config.VIP) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Name)
	}
	return out
}

// drainProgress is DrainStatus in view v.
func drainProgress(v *gossip.View, self string, vips []config.VIP) api.DrainStatus {
	digest := repoint.ViewDigest(v)
	s := api.DrainStatus{Waiting: []string{}}
	for _, m := range v.Members {
		if m.Name == self || !m.Live() || m.Meta.Draining || m.Meta.Repointed == digest {
			continue
		}
		if slices.ContainsFunc(vips, func(vip config.VIP) bool { return m.Serves(vip.Address) }) {
			s.Waiting = append(s.Waiting, m.Name)
		}
	}
	s.Done = len(s.Waiting) == 0
	return s
}

// DrainProgress is drainProgress now.
func (d *Daemon) DrainProgress() api.DrainStatus {
	cfg := d.config()
	return drainProgress(d.cluster.View(), cfg.Node.Name, cfg.VIPs)
}

// repointReports gossips the digest of each view whose re-pointing is done
// here, for the drains of the other hosts. The repointer's loop tells it;
// the update waits for its broadcast on this task's goroutine.
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

func (s *hostState) setLeaving(leaving bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leave.leaving = leaving
}

func (s *hostState) setRepointed(digest uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leave.repointed = digest
}

// setStopping drains a stopping host, or lets it answer again, and says
// whether that changed.
func (s *hostState) setStopping(stopping bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := s.stopping != stopping
	s.stopping = stopping
	return changed
}

// stopDrain is the draining part of a graceful stop. A host already drained
// has nothing to hand over. A host that would leave a VIP to nobody does not
// drain: it answers until it exits, and returns false; if other hosts stop
// at the same time, it first waits (up to repointStopWait) for one of them
// to come back, as a restart brings it, and drains to it. Otherwise it drains,
// waits (up to repointStopWait) for the others to re-point its clients, and
// keeps draining only while another host stays eligible (guardStop).
func (d *Daemon) stopDrain(ctx context.Context) (drained bool, guard func()) {
	if d.state.Draining() {
		return true, func() {}
	}
	vs := d.mayLeave(ctx)
	// One wait for a host to come back and for the re-pointing.
	wait, done := context.WithTimeout(ctx, repointStopWait)
	defer done()
	if len(vs) > 0 && d.othersLeaving() {
		d.log.Info("last eligible host while other hosts stop too (a restart of several at once): answering until one of them is back, or 10 s", "vips", vipNames(vs))
		for len(vs) > 0 && clock.Sleep(wait, d.config().Gossip.ProbeInterval) {
			vs = orphans(d.cluster.View(), d.config().Node.Name, d.config().VIPs)
		}
	}
	if len(vs) > 0 {
		d.log.Warn("stopping WITHOUT draining: this host is the last eligible host; it answers until it exits, and its clients wait for the next host up",
			"vips", vipNames(vs))
		return false, func() {}
	}
	d.log.Info("stopping: draining so that other hosts take this host's clients")
	d.state.setStopping(true)
	d.updateMeta("draining")
	gctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { d.guardStop(gctx) })
	d.waitRepointed(wait)
	return true, func() { cancel(); wg.Wait() }
}

// othersLeaving reports whether another live member is leaving too.
func (d *Daemon) othersLeaving() bool {
	self := d.config().Node.Name
	return slices.ContainsFunc(d.cluster.View().Members, func(m gossip.Member) bool {
		return m.Name != self && m.Live() && m.Meta.Leaving
	})
}

// waitRepointed waits until the peers have re-pointed this host's clients,
// or ctx ends.
func (d *Daemon) waitRepointed(ctx context.Context) {
	for !d.DrainProgress().Done && clock.Sleep(ctx, d.config().Gossip.ProbeInterval) {
	}
}

// guardStop keeps a stopping host drained only while another host stays
// eligible for each of its VIPs, until ctx ends.
func (d *Daemon) guardStop(ctx context.Context) {
	cfg := d.config()
	for clock.Sleep(ctx, cfg.Gossip.ProbeInterval) {
		vs := orphans(d.cluster.View(), cfg.Node.Name, cfg.VIPs)
		if !d.state.setStopping(len(vs) == 0) {
			continue
		}
		if len(vs) > 0 {
			d.log.Warn("no other host is eligible any more: answering again until this host exits", "vips", vipNames(vs))
		} else {
			d.log.Info("another host is eligible again: draining")
		}
		d.updateMeta("stop drain")
	}
}
