// Package drain drains this host and stops it gracefully without leaving a
// VIP to nobody.
//
// Draining and stopping never leave a VIP to nobody unless the operator
// says so (`arpshare drain --force`):
//
//   - A host that would be the last eligible host of a VIP refuses to
//     drain, and stops without draining; if others stop too, it first
//     waits a little for one of them to come back (see Drainer.Stop).
//   - Two hosts leaving at once each see the other still eligible. So a
//     host first says it is leaving (gossip.Meta.Leaving, which changes no
//     eligibility), waits until every peer that could stay has gossiped
//     that it saw this (gossip.Meta.Seen), and looks again: another
//     leaving host counts as staying only if its name sorts after this
//     host's. Of hosts leaving at once, the one whose name sorts last
//     stays. Waiting for the peers' word, not for a time, is what makes
//     this hold on a loaded host: when a host decides, each peer either
//     had seen it leaving before deciding itself, or had decided before
//     it answered, and says so in the same metadata (Draining).
//   - While a host stops, it drains only as long as another host stays
//     eligible for each of its VIPs: if the others go (a restart of the
//     whole fleet at once), it answers again until it exits.
//
// A drain then waits for the truth: each host gossips the digest of the
// last view it has finished re-pointing (gossip.Meta.Repointed), and the
// draining host is done when every peer that serves its VIPs reports the
// digest of its own view.
package drain

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/arpshare/arpshare/daemon/repoint"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/api"
	"github.com/arpshare/arpshare/internal/clock"
	"github.com/arpshare/arpshare/internal/config"
)

// repointStopWait bounds how long a stopping host waits for its peers to
// re-point its clients, or, the last eligible host, for another host to
// come back: with the settle wait (drainWait), handover.stop_wait
// (30 s by default) and the leave, a stop stays under the unit's
// TimeoutStopSec= (45 s).
const repointStopWait = 10 * time.Second

// How long a host that asks to leave waits for its peers to say they saw
// it (gossip.Meta.Seen), in Drainer waits: usually two gossip hops, a
// fraction of a second; more when an update is lost and sent again at the
// next probe. A drain that gets no word is refused; a stop decides by
// what gossip shows (guardStop heals it), within the unit's stop time.
const (
	setConfirmWaits  = 5
	stopConfirmWaits = 2
	confirmPoll      = 20 * time.Millisecond
)

// State is this host's drain state and the config in force.
type State interface {
	Config() *config.Config
	// Draining: drained by the operator, or stopping.
	Draining() bool
	// SetLeaving says whether this host asks to stop answering
	// (gossip.Meta.Leaving).
	SetLeaving(leaving bool)
	// SetDrained records the operator's drain, on disk first.
	SetDrained(drained bool) (changed bool, err error)
	// SetStopping drains a stopping host, or lets it answer again, and
	// says whether that changed.
	SetStopping(stopping bool) bool
}

// Cluster is gossip: the view, and the metadata it spreads.
type Cluster interface {
	View() *gossip.View
	UpdateMeta(timeout time.Duration) error
}

// Drainer drains and resumes this host, and does the draining part of a
// graceful stop. Drains and resumes take seconds, one at a time.
type Drainer struct {
	log     *slog.Logger
	state   State
	cluster Cluster
	// wait is how long news usually takes to spread: the unit of the
	// waits for the peers' word, and the bound on each metadata update.
	wait time.Duration
	lock sync.Mutex
}

// New returns a Drainer; wait is how long news takes to spread.
func New(log *slog.Logger, state State, cluster Cluster, wait time.Duration) *Drainer {
	return &Drainer{log: log, state: state, cluster: cluster, wait: wait}
}

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

// Set drains this host (or resumes it). Unless force is set, a drain
// that would leave a VIP with no eligible host is refused with a
// *RefusedError. The state is written to disk first, so that it survives a
// restart. It returns once the cluster has been told; DrainProgress says
// when the others have taken this host's clients.
func (d *Drainer) Set(ctx context.Context, drained, force bool) error {
	d.lock.Lock()
	defer d.lock.Unlock()
	if drained && d.state.Draining() {
		return nil
	}
	if drained && !force {
		vs, unconfirmed := d.mayLeave(ctx, setConfirmWaits*d.wait)
		var err error
		switch {
		case ctx.Err() != nil:
			err = fmt.Errorf("drain cancelled: %w", ctx.Err())
		case len(unconfirmed) > 0:
			d.log.Warn("drain refused: peers did not say in time that they saw this host leave", "peers", unconfirmed)
			err = fmt.Errorf("drain refused: %s did not gossip within %s that they saw this host leave, so it cannot tell whether they leave too; try again once gossip reaches them (arpshare status), or drain --force",
				strings.Join(unconfirmed, ", "), setConfirmWaits*d.wait)
		case len(vs) > 0:
			d.log.Warn("drain refused: this host is the last eligible host", "vips", vipNames(vs))
			err = &api.RefusedError{VIPs: vs}
		}
		if err != nil {
			d.state.SetLeaving(false)
			d.updateMeta("drain refused")
			return err
		}
	}
	changed, err := d.state.SetDrained(drained)
	// The drain flag replaces leaving: cleared after it, so that no
	// metadata gossiped between the two shows this host staying.
	d.state.SetLeaving(false)
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
// it would leave to nobody, and the peers that did not confirm within
// confirm that they saw it leave. Unless it is the last at once, it tells
// the cluster it is leaving, waits for every peer that could stay to
// gossip that it saw this, and looks again (see the comment at the top).
// Leaving stays set.
func (d *Drainer) mayLeave(ctx context.Context, confirm time.Duration) (vs []config.VIP, unconfirmed []string) {
	self, vips := d.state.Config().Node.Name, d.state.Config().VIPs
	if vs := orphans(d.cluster.View(), self, vips); len(vs) > 0 {
		return vs, nil
	}
	d.state.SetLeaving(true)
	d.updateMeta("leaving")
	wait, done := context.WithTimeout(ctx, confirm)
	defer done()
	for {
		v := d.cluster.View()
		unconfirmed = unconfirmedPeers(v, self, vips)
		if len(unconfirmed) == 0 || !clock.Sleep(wait, confirmPoll) {
			return orphans(v, self, vips), unconfirmed
		}
	}
}

// unconfirmedPeers returns the members of v that could stay eligible for
// one of vips (as in orphans) but whose Meta.Seen is not the digest of
// the hosts v shows leaving, self included: they have not gossiped yet
// that they saw self leave. Peers of a build before 0.1.0, which gossip
// neither their release nor Seen, are taken at their word in v.
func unconfirmedPeers(v *gossip.View, self string, vips []config.VIP) []string {
	want := gossip.LeavingDigest(v, self, true)
	var out []string
	for _, m := range v.Members {
		if m.Name == self || !m.Live() || m.Meta.Draining || m.Meta.Software == "" || m.Meta.Seen == want {
			continue
		}
		if servesAny(m, vips) {
			out = append(out, m.Name)
		}
	}
	return out
}

func (d *Drainer) updateMeta(what string) {
	if err := d.cluster.UpdateMeta(d.wait); err != nil {
		d.log.Warn("gossip "+what, "error", err)
	}
}

// servesAny reports whether m serves one of vips, healthy or not.
func servesAny(m gossip.Member, vips []config.VIP) bool {
	return slices.ContainsFunc(vips, func(vip config.VIP) bool { return m.Serves(vip.Address) })
}

func vipNames(vs []config.VIP) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Name)
	}
	return out
}

// ProgressIn is how far the others are in taking the clients of self, in
// view v.
func ProgressIn(v *gossip.View, self string, vips []config.VIP) api.DrainStatus {
	digest := repoint.ViewDigest(v)
	s := api.DrainStatus{Waiting: []string{}}
	for _, m := range v.Members {
		if m.Name == self || !m.Live() || m.Meta.Draining || m.Meta.Repointed == digest {
			continue
		}
		if servesAny(m, vips) {
			s.Waiting = append(s.Waiting, m.Name)
		}
	}
	s.Done = len(s.Waiting) == 0
	return s
}

// Progress is how far the others are in taking this host's clients, now.
func (d *Drainer) Progress() api.DrainStatus {
	cfg := d.state.Config()
	return ProgressIn(d.cluster.View(), cfg.Node.Name, cfg.VIPs)
}

// Stop is the draining part of a graceful stop. A host already drained
// has nothing to hand over. A host that would leave a VIP to nobody does not
// drain: it answers until it exits, and returns false; if other hosts stop
// at the same time, it first waits (up to repointStopWait) for one of them
// to come back, as a restart brings it, and drains to it. Otherwise it drains,
// waits (up to repointStopWait) for the others to re-point its clients, and
// keeps draining only while another host stays eligible (guardStop).
func (d *Drainer) Stop(ctx context.Context) (drained bool, guard func()) {
	if d.state.Draining() {
		return true, func() {}
	}
	vs, unconfirmed := d.mayLeave(ctx, stopConfirmWaits*d.wait)
	if len(unconfirmed) > 0 {
		// guardStop answers again if the others go too.
		d.log.Warn("stopping: peers did not say in time that they saw this host leave; deciding by what gossip shows", "peers", unconfirmed)
	}
	// One wait for a host to come back and for the re-pointing.
	wait, done := context.WithTimeout(ctx, repointStopWait)
	defer done()
	if len(vs) > 0 && d.othersLeaving() {
		d.log.Info("last eligible host while other hosts stop too (a restart of several at once): answering until one of them is back, or 10 s", "vips", vipNames(vs))
		for len(vs) > 0 && clock.Sleep(wait, d.state.Config().Gossip.ProbeInterval) {
			vs = orphans(d.cluster.View(), d.state.Config().Node.Name, d.state.Config().VIPs)
		}
	}
	if len(vs) > 0 {
		d.log.Warn("stopping WITHOUT draining: this host is the last eligible host; it answers until it exits, and its clients wait for the next host up",
			"vips", vipNames(vs))
		return false, func() {}
	}
	d.log.Info("stopping: draining so that other hosts take this host's clients")
	d.state.SetStopping(true)
	d.updateMeta("draining")
	gctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { d.guardStop(gctx) })
	d.waitRepointed(wait)
	return true, func() { cancel(); wg.Wait() }
}

// othersLeaving reports whether another live member is leaving too.
func (d *Drainer) othersLeaving() bool {
	self := d.state.Config().Node.Name
	return slices.ContainsFunc(d.cluster.View().Members, func(m gossip.Member) bool {
		return m.Name != self && m.Live() && m.Meta.Leaving
	})
}

// waitRepointed waits until the peers have re-pointed this host's clients,
// or ctx ends.
func (d *Drainer) waitRepointed(ctx context.Context) {
	for !d.Progress().Done && clock.Sleep(ctx, d.state.Config().Gossip.ProbeInterval) {
	}
}

// guardStop keeps a stopping host drained only while another host stays
// eligible for each of its VIPs, until ctx ends.
func (d *Drainer) guardStop(ctx context.Context) {
	cfg := d.state.Config()
	for clock.Sleep(ctx, cfg.Gossip.ProbeInterval) {
		vs := orphans(d.cluster.View(), cfg.Node.Name, cfg.VIPs)
		if !d.state.SetStopping(len(vs) == 0) {
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
