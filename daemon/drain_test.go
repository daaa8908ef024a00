package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/api"
)

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
		drained, guard := h1.d.drainer.Stop(ctx)
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
