package viewlog

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/config"
)

// TestRejectedLoggedOnce: a member's rejection is logged once per cause,
// not on every view, and its return to trust is said.
func TestRejectedLoggedOnce(t *testing.T) {
	t.Parallel()
	meta, err := gossip.DecodeMeta([]byte(`{"v":1,"a":1,"w":100000,"h":["198.18.0.200"]}`))
	if err == nil {
		t.Fatal("a weight of 100000 decoded")
	}
	bad := gossip.Member{Name: "h2", Addr: netip.MustParseAddrPort("198.18.0.12:7946"), State: gossip.StateAlive, Meta: meta, Err: err.Error(), Reason: gossip.RejectWeight}
	good := gossip.Member{Name: "h1", State: gossip.StateAlive, Meta: gossip.Meta{Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: 1}}
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	w := New()
	v := gossip.NewView("h1", []gossip.Member{good, bad}, 0)
	w.Observe(log, v, nil)
	w.Observe(log, v, nil)
	if n := strings.Count(logged.String(), "member rejected"); n != 1 {
		t.Errorf("rejection logged %d times over two views, want once:\n%s", n, logged.String())
	}
	w.Observe(log, gossip.NewView("h1", []gossip.Member{good, {Name: "h2", State: gossip.StateAlive, Meta: good.Meta}}, 0), nil)
	if !strings.Contains(logged.String(), "member trusted again") {
		t.Errorf("no word when h2 is trusted again:\n%s", logged.String())
	}
}

// TestQuorumAndFallback: losing and regaining quorum are said once each,
// and so are a VIP's fallback (no host passes its check) and its end.
func TestQuorumAndFallback(t *testing.T) {
	t.Parallel()
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	vip := netip.MustParseAddr("198.18.0.200")
	vips := []config.VIP{{Name: "web", Address: vip}}
	member := func(name string, healthy bool) gossip.Member {
		m := gossip.Member{Name: name, State: gossip.StateAlive, Meta: gossip.Meta{Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: 1}}
		if healthy {
			m.Meta.VIPs = []netip.Addr{vip}
		} else {
			m.Meta.Unhealthy = []netip.Addr{vip}
		}
		return m
	}
	w := New()
	w.Observe(log, gossip.NewView("h1", []gossip.Member{member("h1", true)}, 3), vips)
	w.Observe(log, gossip.NewView("h1", []gossip.Member{member("h1", false), member("h2", false)}, 2), vips)
	w.Observe(log, gossip.NewView("h1", []gossip.Member{member("h1", true), member("h2", true)}, 2), vips)
	for msg, want := range map[string]int{"lost quorum": 1, "quorum regained": 1, "no host passes the health check": 1, "a host passes the health check again": 1, "cluster view changed": 3} {
		if n := strings.Count(logged.String(), msg); n != want {
			t.Errorf("%q logged %d times, want %d:\n%s", msg, n, want, logged.String())
		}
	}
}
