package daemon

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/gossip"
)

var testVIP = netip.MustParseAddr("198.18.0.200")

func view(self string, live ...string) *gossip.View {
	var ms []gossip.Member
	for _, n := range live {
		ms = append(ms, gossip.Member{Name: n, State: gossip.StateAlive,
			Meta: gossip.Meta{Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: 1, VIPs: []netip.Addr{testVIP}}})
	}
	return gossip.NewView(self, ms)
}

func TestRepointer(t *testing.T) {
	t.Parallel()
	table := arp.NewClientTable(1000, time.Hour)
	for i := range 300 {
		table.Learn(testVIP, netip.AddrFrom4([4]byte{198, 18, 1 + byte(i/250), byte(i % 250)}), net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}, time.Now())
	}
	sent := map[netip.Addr]int{}
	var current *gossip.View
	r := NewRepointer(Repointer{
		Table:  table,
		View:   func() *gossip.View { return current },
		Send:   func(vip netip.Addr, c arp.Client) error { sent[c.IP]++; return nil },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	ctx := context.Background()

	// The first view: this host re-points every known client it owns.
	all := view("h1", "h1", "h2", "h3")
	current = all
	r.plan(all, table.Clients())
	for range repointRounds + 1 {
		r.round(ctx, current)
	}
	for _, c := range table.Clients() {
		want := 0
		if all.Owns(testVIP, c.IP) {
			want = repointRounds
		}
		if sent[c.IP] != want {
			t.Fatalf("first view: client %s got %d packets, want %d", c.IP, sent[c.IP], want)
		}
	}

	// h2 dies: only h2's clients that now fall to h1 are re-pointed.
	clear(sent)
	noH2 := view("h1", "h1", "h3")
	current = noH2
	r.plan(noH2, table.Clients())
	r.round(ctx, current)
	moved := 0
	for _, c := range table.Clients() {
		want := 0
		if all.Owner(testVIP, c.IP) == "h2" && noH2.Owns(testVIP, c.IP) {
			want = 1
			moved++
		}
		if sent[c.IP] != want {
			t.Fatalf("after h2 died: client %s got %d packets, want %d", c.IP, sent[c.IP], want)
		}
	}
	if moved == 0 {
		t.Fatal("no client moved to h1; the test proves nothing")
	}

	// h2 is back before the other rounds: h1 no longer owns those clients
	// and must stop sending to them.
	current = all
	r.plan(all, table.Clients())
	r.round(ctx, current)
	r.round(ctx, current)
	for ip, n := range sent {
		if n != 1 {
			t.Errorf("client %s got %d packets after it moved back, want 1", ip, n)
		}
	}
	if len(r.pending) != 0 {
		t.Errorf("%d clients still pending", len(r.pending))
	}
}
