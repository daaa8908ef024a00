package drain

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/config"
)

// world is gossip between hosts in memory: each host's metadata reaches
// each other host after a random delay, newer over older, and a host
// gossips again when what it sees leaving changes (as gossip.Cluster's
// loop does for Meta.Seen).
type world struct {
	mu       sync.Mutex
	states   map[string]*fakeState
	versions map[string]int
	// heard[viewer][host] is the latest metadata viewer has of host.
	heard    map[string]map[string]versioned
	maxDelay time.Duration
	sends    sync.WaitGroup
}

type versioned struct {
	version int
	meta    gossip.Meta
}

func newWorld(maxDelay time.Duration, names ...string) *world {
	w := &world{states: map[string]*fakeState{}, versions: map[string]int{}, heard: map[string]map[string]versioned{}, maxDelay: maxDelay}
	for _, n := range names {
		w.states[n] = &fakeState{cfg: &config.Config{Node: config.NodeConfig{Name: n},
			Gossip: config.GossipConfig{ProbeInterval: 5 * time.Millisecond}, VIPs: []config.VIP{{Name: "web", Address: testVIP}}}}
		w.heard[n] = map[string]versioned{}
	}
	for _, n := range names {
		w.publish(n, 0)
	}
	return w
}

// view is what viewer sees: its own metadata as its state says, the
// others' as heard.
func (w *world) view(viewer string) *gossip.View {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.viewLocked(viewer)
}

func (w *world) viewLocked(viewer string) *gossip.View {
	var ms []gossip.Member
	for name, h := range w.heard[viewer] {
		ms = append(ms, gossip.Member{Name: name, State: gossip.StateAlive, Meta: h.meta})
	}
	ms = append(ms, gossip.Member{Name: viewer, State: gossip.StateAlive, Meta: w.metaLocked(viewer, nil)})
	return gossip.NewView(viewer, ms, 0)
}

func (w *world) metaLocked(host string, v *gossip.View) gossip.Meta {
	s := w.states[host]
	s.mu.Lock()
	m := gossip.Meta{Version: gossip.MetaVersion, Software: "0.1.0", Algorithm: gossip.Algorithm, Weight: 1, VIPs: []netip.Addr{testVIP},
		Draining: s.drained || s.stopping, Leaving: s.leaving}
	s.mu.Unlock()
	if v != nil {
		m.Seen = gossip.LeavingDigest(v, host, m.Leaving)
	}
	return m
}

// publish sends host's metadata now to every other host, each after a
// random delay up to the world's, or at once when sync.
func (w *world) publish(host string, delay time.Duration) {
	w.mu.Lock()
	w.versions[host]++
	m := versioned{w.versions[host], w.metaLocked(host, w.viewLocked(host))}
	w.mu.Unlock()
	for to := range w.states {
		if to == host {
			continue
		}
		d := time.Duration(0)
		if delay > 0 {
			d = rand.N(delay)
		}
		w.sends.Go(func() {
			time.Sleep(d)
			w.deliver(to, host, m)
		})
	}
}

func (w *world) deliver(to, from string, m versioned) {
	w.mu.Lock()
	if m.version <= w.heard[to][from].version {
		w.mu.Unlock()
		return
	}
	before := gossip.LeavingDigest(w.viewLocked(to), to, false)
	w.heard[to][from] = m
	after := gossip.LeavingDigest(w.viewLocked(to), to, false)
	w.mu.Unlock()
	if before != after {
		w.publish(to, w.maxDelay)
	}
}

// host is one host's gossip.Cluster in the world.
type host struct {
	w    *world
	name string
}

func (h host) View() *gossip.View { return h.w.view(h.name) }
func (h host) UpdateMeta(time.Duration) error {
	h.w.publish(h.name, h.w.maxDelay)
	return nil
}

// TestDrainAtOnce: two hosts drained at the same moment, with gossip
// taking up to twice the Drainer's wait: in no round do both drain (a
// fixed wait for news to spread, rather than the peers' word, lets both
// drain). A host that does not drain is refused, as the last eligible host
// or for want of its peer's word; most rounds drain one.
func TestDrainAtOnce(t *testing.T) {
	t.Parallel()
	const wait, rounds = 10 * time.Millisecond, 40
	ones := 0
	for round := range rounds {
		w := newWorld(2*wait, "h1", "h2")
		log := slog.New(slog.DiscardHandler)
		ds := []*Drainer{New(log, w.states["h1"], host{w, "h1"}, wait), New(log, w.states["h2"], host{w, "h2"}, wait)}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, d := range ds {
			wg.Go(func() { errs[i] = d.Set(context.Background(), true, false) })
		}
		wg.Wait()
		w.sends.Wait()
		drained := 0
		for i, name := range []string{"h1", "h2"} {
			switch draining := w.states[name].Draining(); {
			case errs[i] == nil && draining:
				drained++
			case errs[i] == nil || draining:
				t.Errorf("round %d: %s: error %v, draining %v", round, name, errs[i], draining)
			}
		}
		if drained > 1 {
			t.Fatalf("round %d: both hosts drained: the VIP is left to nobody", round)
		}
		if drained == 1 {
			ones++
		}
	}
	if ones < rounds/2 {
		t.Errorf("only %d of %d rounds drained a host", ones, rounds)
	}
}
