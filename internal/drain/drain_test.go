package drain

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/arpshare/arpshare/daemon/repoint"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/api"
	"github.com/arpshare/arpshare/internal/config"
)

var testVIP = netip.MustParseAddr("198.18.0.200")

// member is a live member serving testVIP, healthy unless unhealthy.
func member(name string, edit func(*gossip.Member)) gossip.Member {
	m := gossip.Member{Name: name, State: gossip.StateAlive,
		Meta: gossip.Meta{Version: gossip.MetaVersion, Software: "0.1.0", Algorithm: gossip.Algorithm, Weight: 1, VIPs: []netip.Addr{testVIP}}}
	if edit != nil {
		edit(&m)
	}
	return m
}

// TestOrphans: a host may stop answering only if another host stays
// eligible; of hosts leaving at once, the one whose name sorts last stays.
func TestOrphans(t *testing.T) {
	t.Parallel()
	vips := []config.VIP{{Name: "web", Address: testVIP}}
	leaving := func(m *gossip.Member) { m.Meta.Leaving = true }
	for _, tt := range []struct {
		name    string
		self    string
		members []gossip.Member
		want    bool // orphaned: self may not leave
	}{
		{"alone", "h1", []gossip.Member{member("h1", nil)}, true},
		{"another host", "h1", []gossip.Member{member("h1", nil), member("h2", nil)}, false},
		{"the other drains", "h1", []gossip.Member{member("h1", nil), member("h2", func(m *gossip.Member) { m.Meta.Draining = true })}, true},
		{"the other is dead", "h1", []gossip.Member{member("h1", nil), member("h2", func(m *gossip.Member) { m.State = gossip.StateDead })}, true},
		{"the other is unreachable from here: it is eligible still", "h1", []gossip.Member{member("h1", nil), member("h2", func(m *gossip.Member) { m.Unreachable = true })}, false},
		{"the other is untrusted", "h1", []gossip.Member{member("h1", nil), member("h2", func(m *gossip.Member) { m.Err = "version" })}, true},
		{"the other does not serve it", "h1", []gossip.Member{member("h1", nil), member("h2", func(m *gossip.Member) { m.Meta.VIPs = nil })}, true},
		{"the other fails its check: it answers in fallback", "h1", []gossip.Member{member("h1", nil), member("h2", func(m *gossip.Member) {
			m.Meta.VIPs, m.Meta.Unhealthy = nil, []netip.Addr{testVIP}
		})}, false},
		{"both leave: the first by name goes", "h1", []gossip.Member{member("h1", leaving), member("h2", leaving)}, false},
		{"both leave: the last by name stays", "h2", []gossip.Member{member("h1", leaving), member("h2", leaving)}, true},
		{"three leave: the middle one goes", "h2", []gossip.Member{member("h1", leaving), member("h2", leaving), member("h3", leaving)}, false},
	} {
		v := gossip.NewView(tt.self, tt.members, 0)
		if got := len(orphans(v, tt.self, vips)) > 0; got != tt.want {
			t.Errorf("%s: orphaned %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestViewDigest: the digest depends on who is eligible for what, and
// nothing else: not the order of members, nor the drain reports.
func TestViewDigest(t *testing.T) {
	t.Parallel()
	a, b := member("h1", nil), member("h2", nil)
	d := repoint.ViewDigest(gossip.NewView("h1", []gossip.Member{a, b}, 0))
	b2 := b
	b2.Meta.Repointed, b2.Meta.Leaving = 7, true
	if got := repoint.ViewDigest(gossip.NewView("h2", []gossip.Member{b2, a}, 0)); got != d {
		t.Errorf("same eligibility, digest %d != %d", got, d)
	}
	for name, other := range map[string]gossip.Member{
		"h2 drains":   member("h2", func(m *gossip.Member) { m.Meta.Draining = true }),
		"h2 weighs 2": member("h2", func(m *gossip.Member) { m.Meta.Weight = 2 }),
		"h2 is dead":  member("h2", func(m *gossip.Member) { m.State = gossip.StateDead }),
	} {
		if got := repoint.ViewDigest(gossip.NewView("h1", []gossip.Member{a, other}, 0)); got == d || got == 0 {
			t.Errorf("%s: digest %d, want neither %d nor 0", name, got, d)
		}
	}
}

// TestDrainProgress: a drained host is done when every live peer serving
// its VIPs reports the digest of its view.
func TestDrainProgress(t *testing.T) {
	t.Parallel()
	vips := []config.VIP{{Name: "web", Address: testVIP}}
	members := []gossip.Member{
		member("h1", func(m *gossip.Member) { m.Meta.Draining = true }),
		member("h2", nil), member("h3", nil),
		member("h4", func(m *gossip.Member) { m.Meta.VIPs = []netip.Addr{netip.MustParseAddr("198.18.0.9")} }),
		member("h5", func(m *gossip.Member) { m.State = gossip.StateDead }),
	}
	v := gossip.NewView("h1", members, 0)
	if diff := cmp.Diff(api.DrainStatus{Waiting: []string{"h2", "h3"}}, ProgressIn(v, "h1", vips)); diff != "" {
		t.Errorf("nobody reported (-want +got):\n%s", diff)
	}
	members[1].Meta.Repointed = repoint.ViewDigest(v)
	members[2].Meta.Repointed = repoint.ViewDigest(v) + 1 // an older view
	v = gossip.NewView("h1", members, 0)
	if diff := cmp.Diff(api.DrainStatus{Waiting: []string{"h3"}}, ProgressIn(v, "h1", vips)); diff != "" {
		t.Errorf("h2 reported (-want +got):\n%s", diff)
	}
	members[2].Meta.Repointed = repoint.ViewDigest(v)
	v = gossip.NewView("h1", members, 0)
	if diff := cmp.Diff(api.DrainStatus{Done: true, Waiting: []string{}}, ProgressIn(v, "h1", vips)); diff != "" {
		t.Errorf("all reported (-want +got):\n%s", diff)
	}
}

// TestUnconfirmedPeers: a peer that could stay confirms it saw self leave
// by gossiping the digest of the hosts self sees leaving; draining, dead
// and other VIPs' peers, and peers of a build before 0.1.0, are not
// waited for.
func TestUnconfirmedPeers(t *testing.T) {
	t.Parallel()
	vips := []config.VIP{{Name: "web", Address: testVIP}}
	leaving := func(m *gossip.Member) { m.Meta.Leaving = true }
	base := []gossip.Member{member("h1", leaving), member("h3", leaving)}
	want := gossip.LeavingDigest(gossip.NewView("h1", base, 0), "h1", true)
	seen := func(d uint32) func(*gossip.Member) { return func(m *gossip.Member) { m.Meta.Seen = d } }
	for _, tt := range []struct {
		name string
		peer gossip.Member
		want bool // h2 unconfirmed
	}{
		{"said so", member("h2", seen(want)), false},
		{"saw h1 only", member("h2", seen(gossip.LeavingDigest(gossip.NewView("h2", base[:1], 0), "h2", false))), true},
		{"saw nobody leave", member("h2", nil), true},
		{"draining", member("h2", func(m *gossip.Member) { m.Meta.Draining = true }), false},
		{"dead", member("h2", func(m *gossip.Member) { m.State = gossip.StateDead }), false},
		{"another VIP", member("h2", func(m *gossip.Member) { m.Meta.VIPs = []netip.Addr{netip.MustParseAddr("198.18.0.9")} }), false},
		{"a build before 0.1.0", member("h2", func(m *gossip.Member) { m.Meta.Software = "" }), false},
	} {
		v := gossip.NewView("h1", append(slices.Clone(base), tt.peer), 0)
		if got := slices.Contains(unconfirmedPeers(v, "h1", vips), "h2"); got != tt.want {
			t.Errorf("%s: unconfirmed %v, want %v", tt.name, got, tt.want)
		}
	}
}

// fakeState is a host's drain state in memory.
type fakeState struct {
	mu                         sync.Mutex
	cfg                        *config.Config
	drained, stopping, leaving bool
	failWrite                  error
}

func (s *fakeState) Config() *config.Config { return s.cfg }
func (s *fakeState) Draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drained || s.stopping
}
func (s *fakeState) SetLeaving(l bool) { s.mu.Lock(); s.leaving = l; s.mu.Unlock() }
func (s *fakeState) SetDrained(d bool) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failWrite != nil {
		return false, s.failWrite
	}
	changed := s.drained != d
	s.drained = d
	return changed, nil
}
func (s *fakeState) SetStopping(st bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := s.stopping != st
	s.stopping = st
	return changed
}

// fakeCluster is a view the test sets, and the metadata updates it counts.
// Its peers have seen at once whether self is leaving (Meta.Seen), unless
// the test set their Seen.
type fakeCluster struct {
	mu      sync.Mutex
	v       *gossip.View
	state   *fakeState
	updates int
}

func (c *fakeCluster) View() *gossip.View {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state.mu.Lock()
	leaving := c.state.leaving
	c.state.mu.Unlock()
	ms := slices.Clone(c.v.Members)
	for i, m := range ms {
		if m.Name == c.v.Self {
			ms[i].Meta.Leaving = leaving
		}
	}
	for i, m := range ms {
		if m.Name != c.v.Self && m.Meta.Seen == 0 {
			ms[i].Meta.Seen = gossip.LeavingDigest(gossip.NewView(m.Name, ms, 0), m.Name, m.Meta.Leaving)
		}
	}
	return gossip.NewView(c.v.Self, ms, c.v.Expect)
}
func (c *fakeCluster) set(v *gossip.View) { c.mu.Lock(); c.v = v; c.mu.Unlock() }
func (c *fakeCluster) UpdateMeta(time.Duration) error {
	c.mu.Lock()
	c.updates++
	c.mu.Unlock()
	return nil
}

func newDrainer(members ...gossip.Member) (*Drainer, *fakeState, *fakeCluster) {
	st := &fakeState{cfg: &config.Config{Node: config.NodeConfig{Name: "h1"},
		Gossip: config.GossipConfig{ProbeInterval: 5 * time.Millisecond}, VIPs: []config.VIP{{Name: "web", Address: testVIP}}}}
	cl := &fakeCluster{v: gossip.NewView("h1", members, 0), state: st}
	return New(slog.New(slog.DiscardHandler), st, cl, 10*time.Millisecond), st, cl
}

// TestSet: the last eligible host refuses a drain, naming the VIP, unless
// forced; with another host eligible it drains, and resumes; a failed
// write is returned; without the peer's word that it saw this host leave,
// the drain is refused.
func TestSet(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, st, _ := newDrainer(member("h1", nil))
	var refused *api.RefusedError
	if err := d.Set(ctx, true, false); !errors.As(err, &refused) || len(refused.VIPs) != 1 || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("drain of the last host: %v, want a refusal naming --force", err)
	}
	if st.Draining() || st.leaving {
		t.Fatalf("refused, yet draining %v, leaving %v", st.Draining(), st.leaving)
	}
	if err := d.Set(ctx, true, true); err != nil || !st.Draining() {
		t.Fatalf("forced drain: %v, draining %v", err, st.Draining())
	}
	if err := d.Set(ctx, true, false); err != nil {
		t.Errorf("drain again: %v", err)
	}
	if err := d.Set(ctx, false, false); err != nil || st.Draining() {
		t.Fatalf("resume: %v, draining %v", err, st.Draining())
	}
	d, st, cl := newDrainer(member("h1", nil), member("h2", nil))
	if err := d.Set(ctx, true, false); err != nil || !st.Draining() || cl.updates == 0 {
		t.Fatalf("drain with h2 eligible: %v, draining %v, %d updates", err, st.Draining(), cl.updates)
	}
	st.failWrite = errors.New("disk full")
	if err := d.Set(ctx, false, false); err == nil {
		t.Error("resume with a failing disk: nil")
	}
	// h2 does not say it saw h1 leave (it gossips another host's leaving):
	// refused, naming h2, and h1 does not drain.
	d, st, _ = newDrainer(member("h1", nil), member("h2", func(m *gossip.Member) { m.Meta.Seen = 42 }))
	if err := d.Set(ctx, true, false); err == nil || !strings.Contains(err.Error(), "h2 did not gossip") || st.Draining() || st.leaving {
		t.Errorf("drain without h2's word: %v, draining %v, leaving %v", err, st.Draining(), st.leaving)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	d, _, _ = newDrainer(member("h1", nil), member("h2", nil))
	if err := d.Set(cctx, true, false); err == nil {
		t.Error("drain cancelled: nil")
	}
}

// TestStop: a stop with another host eligible drains and waits for the
// others' re-pointing; the guard answers again when the last other goes;
// the last eligible host does not drain.
func TestStop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, st, _ := newDrainer(member("h1", nil))
	if drained, guard := d.Stop(ctx); drained || st.Draining() {
		t.Fatalf("the last host drained: %v", drained)
	} else {
		guard()
	}
	d, st, cl := newDrainer(member("h1", nil), member("h2", nil))

	// h2 reports the view in which h1 is draining as re-pointed.
	go func() {
		for !st.Draining() {
			time.Sleep(time.Millisecond)
		}
		draining := gossip.NewView("h1", []gossip.Member{member("h1", func(m *gossip.Member) { m.Meta.Draining = true }), member("h2", nil)}, 0)
		cl.set(gossip.NewView("h1", []gossip.Member{member("h1", func(m *gossip.Member) { m.Meta.Draining = true }),
			member("h2", func(m *gossip.Member) { m.Meta.Repointed = repoint.ViewDigest(draining) })}, 0))
	}()
	drained, guard := d.Stop(ctx)
	if !drained || !d.Progress().Done {
		t.Fatalf("stop with h2: drained %v, progress %+v", drained, d.Progress())
	}
	cl.set(gossip.NewView("h1", []gossip.Member{member("h1", nil)}, 0)) // h2 goes
	deadline := time.Now().Add(10 * time.Second)
	for st.Draining() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	guard()
	if st.Draining() {
		t.Error("still draining after the last other host went")
	}
}
