package daemon

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/arpshare/arpshare/daemon/repoint"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/api"
	"github.com/arpshare/arpshare/internal/config"
)

// member is a live member serving testVIP, healthy unless unhealthy.
func member(name string, edit func(*gossip.Member)) gossip.Member {
	m := gossip.Member{Name: name, State: gossip.StateAlive,
		Meta: gossip.Meta{Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: 1, VIPs: []netip.Addr{testVIP}}}
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
	if diff := cmp.Diff(api.DrainStatus{Waiting: []string{"h2", "h3"}}, drainProgress(v, "h1", vips)); diff != "" {
		t.Errorf("nobody reported (-want +got):\n%s", diff)
	}
	members[1].Meta.Repointed = repoint.ViewDigest(v)
	members[2].Meta.Repointed = repoint.ViewDigest(v) + 1 // an older view
	v = gossip.NewView("h1", members, 0)
	if diff := cmp.Diff(api.DrainStatus{Waiting: []string{"h3"}}, drainProgress(v, "h1", vips)); diff != "" {
		t.Errorf("h2 reported (-want +got):\n%s", diff)
	}
	members[2].Meta.Repointed = repoint.ViewDigest(v)
	v = gossip.NewView("h1", members, 0)
	if diff := cmp.Diff(api.DrainStatus{Done: true, Waiting: []string{}}, drainProgress(v, "h1", vips)); diff != "" {
		t.Errorf("all reported (-want +got):\n%s", diff)
	}
}

// TestDrainRefusal: the last eligible host of a VIP refuses to drain, with
// a message naming the VIP and --force; forced, it drains.
func TestDrainRefusal(t *testing.T) {
	t.Parallel()
	c := newCluster("h1", "h2")
	h1, h2 := c.startTwo(t, vipV4, vipV4)
	eventuallyView(t, h1, "h1 sees h2", func(v *gossip.View) bool { return len(v.Eligible(web)) == 2 })
	if _, err := api.Drain(context.Background(), h1.d.api.Socket(), true, false); err != nil {
		t.Fatalf("drain h1 with h2 eligible: %v", err)
	}
	eventuallyView(t, h2, "h2 sees h1 draining", func(v *gossip.View) bool { return len(v.Eligible(web)) == 1 })
	_, err := api.Drain(context.Background(), h2.d.api.Socket(), true, false)
	if err == nil || !strings.Contains(err.Error(), "last eligible host of vip web (198.18.0.200)") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("drain of the last host: %v, want refused, naming web and --force", err)
	}
	var refused *api.RefusedError
	if err := h2.d.SetDrained(context.Background(), true, false); !errors.As(err, &refused) {
		t.Errorf("SetDrained on the last host: %v, want a RefusedError", err)
	}
	if s := h2.d.Status(); s.Draining || !s.Serving {
		t.Errorf("h2 after a refused drain: draining %v, serving %v %q", s.Draining, s.Serving, s.NotServing)
	}
	if m, _ := metaOf(h2.d.cluster.View(), "h2"); m.Leaving || m.Draining {
		t.Errorf("h2's metadata after a refused drain: %+v", m)
	}
	s, err := api.Drain(context.Background(), h2.d.api.Socket(), true, true)
	if err != nil || !s.Draining {
		t.Fatalf("forced drain: %v, draining %v", err, s.Draining)
	}
	eventuallyView(t, h1, "nobody eligible", func(v *gossip.View) bool { return len(v.Eligible(web)) == 0 })
}

// TestStopLastDoesNotDrain: stopping the last eligible host does not drain
// it (it answers until it exits); stopping another one does.
func TestStopLastDoesNotDrain(t *testing.T) {
	t.Parallel()
	c := newCluster("h1", "h2")
	h1, h2 := c.startTwo(t, vipV4, vipV4)
	eventuallyView(t, h1, "h1 sees h2", func(v *gossip.View) bool { return len(v.Eligible(web)) == 2 })
	if err := h1.stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h1.log.String(), "stopping: draining") {
		t.Errorf("h1, with h2 eligible, did not drain on stop:\n%s", h1.log.String())
	}
	eventuallyView(t, h2, "h2 sees h1 gone", func(v *gossip.View) bool {
		return len(v.Eligible(web)) == 1 && v.Eligible(web)[0].Name == "h2"
	})
	if err := h2.stop(); err != nil {
		t.Fatal(err)
	}
	log := h2.log.String()
	if strings.Contains(log, "stopping: draining") || !strings.Contains(log, "stopping WITHOUT draining") || !strings.Contains(log, "vips=[web]") {
		t.Errorf("h2, the last host, drained on stop or did not say why not:\n%s", log)
	}
}

// TestStopGuard: the hosts of a cluster stop at once. The one sorting last
// stops without draining; the other drains to it, and answers again once it
// is gone, until it exits itself.
func TestStopGuard(t *testing.T) {
	t.Parallel()
	c := newCluster("h1", "h2")
	h1, h2 := c.startTwo(t, vipV4, vipV4)
	eventuallyView(t, h1, "h1 sees h2", func(v *gossip.View) bool { return len(v.Eligible(web)) == 2 })
	// h1 stops as a stop does, but stays in its stop until the test ends.
	stopped := make(chan bool, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		drained, guard := h1.d.stopDrain(ctx)
		stopped <- drained
		<-ctx.Done()
		guard()
	}()
	defer cancel()
	eventuallyView(t, h2, "h2 sees h1 leaving and draining", func(v *gossip.View) bool {
		m, ok := metaOf(v, "h1")
		return ok && m.Leaving && m.Draining
	})
	if err := h2.stop(); err != nil {
		t.Fatal(err)
	}
	if !<-stopped {
		t.Fatalf("h1, stopping with h2 eligible, did not drain:\n%s", h1.log.String())
	}
	if log := h2.log.String(); !strings.Contains(log, "stopping WITHOUT draining") {
		t.Errorf("h2, stopping with h1 leaving, drained:\n%s", log)
	}
	eventually(t, "h1 answers again", func() bool { return !h1.d.state.Draining() })
	eventuallyView(t, h1, "h1 eligible again", func(v *gossip.View) bool {
		return len(v.Eligible(web)) == 1 && v.Eligible(web)[0].Name == "h1"
	})
	if !strings.Contains(h1.log.String(), "no other host is eligible any more") {
		t.Errorf("h1 did not say why it answers again:\n%s", h1.log.String())
	}
}

// TestDrainMetaDecode: the drain fields decode within their bounds, and a
// peer's metadata with a digest out of range is not trusted.
func TestDrainMetaDecode(t *testing.T) {
	t.Parallel()
	m := gossip.Meta{Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: 1, Leaving: true, Repointed: 4294967295}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := gossip.DecodeMeta(b)
	if err != nil || !got.Leaving || got.Repointed != 4294967295 {
		t.Errorf("round trip of %s: %+v, %v", b, got, err)
	}
	for _, r := range []string{"-1", "4294967296", "1.5", `"7"`} {
		b := []byte(`{"v":1,"a":1,"w":1,"h":[],"r":` + r + `}`)
		if _, err := gossip.DecodeMeta(b); err == nil {
			t.Errorf("metadata with r = %s decoded", r)
		}
	}
	if _, err := gossip.DecodeMeta([]byte(`{"v":1,"a":1,"w":1,"h":[],"l":"yes"}`)); err == nil {
		t.Error(`metadata with l = "yes" decoded`)
	}
}
