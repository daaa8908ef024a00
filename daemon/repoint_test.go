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
	return gossip.NewView(self, ms, 0)
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
		Mode:   func(netip.Addr) gossip.Mode { return gossip.ModeHash },
		VIPs:   func() []netip.Addr { return []netip.Addr{testVIP} },
		View:   func() *gossip.View { return current },
		Send:   func(vip netip.Addr, c arp.Client) error { sent[c.IP]++; return nil },
		Logger: quietLog(),
	})
	ctx := context.Background()

	// The first view: this host re-points every known client it owns.
	all := view("h1", "h1", "h2", "h3")
	current = all
	r.plan(all, table.Clients(), time.Now())
	for range repointRounds + 1 {
		r.round(ctx, current, time.Now())
	}
	for _, c := range table.Clients() {
		want := 0
		if all.Answers(testVIP, gossip.ModeHash, c.IP) {
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
	r.plan(noH2, table.Clients(), time.Now())
	r.round(ctx, current, time.Now())
	moved := 0
	for _, c := range table.Clients() {
		want := 0
		if all.Owner(testVIP, gossip.ModeHash, c.IP) == "h2" && noH2.Answers(testVIP, gossip.ModeHash, c.IP) {
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
	r.plan(all, table.Clients(), time.Now())
	r.round(ctx, current, time.Now())
	r.round(ctx, current, time.Now())
	for ip, n := range sent {
		if n != 1 {
			t.Errorf("client %s got %d packets after it moved back, want 1", ip, n)
		}
	}
	if len(r.pending) != 0 {
		t.Errorf("%d clients still pending", len(r.pending))
	}
}

func TestRepointerSingleAndRace(t *testing.T) {
	t.Parallel()
	table := arp.NewClientTable(1000, time.Hour)
	for i := range 100 {
		table.Learn(testVIP, netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}, time.Now())
	}
	all := view("h1", "h1", "h2", "h3")
	single := all.Owner(testVIP, gossip.ModeSingle, netip.Addr{})
	var others []string
	for _, h := range []string{"h1", "h2", "h3"} {
		if h != single {
			others = append(others, h)
		}
	}

	// Single mode: the host that takes the VIP over broadcasts, spaced, and
	// sends nobody a unicast.
	for _, self := range others {
		unicast, broadcasts := 0, []time.Time{}
		r := NewRepointer(Repointer{
			Table: table, Mode: func(netip.Addr) gossip.Mode { return gossip.ModeSingle },
			VIPs:      func() []netip.Addr { return []netip.Addr{testVIP} },
			Send:      func(netip.Addr, arp.Client) error { unicast++; return nil },
			Broadcast: func(netip.Addr) error { broadcasts = append(broadcasts, time.Time{}); return nil },
			Logger:    quietLog(),
		})
		now := time.Unix(1000, 0)
		r.plan(view(self, "h1", "h2", "h3"), table.Clients(), now)
		after := view(self, others...) // the single owner died
		r.plan(after, table.Clients(), now)
		for i := range 20 {
			r.round(context.Background(), after, now.Add(time.Duration(i)*repointSpacing))
		}
		owner := after.Owner(testVIP, gossip.ModeSingle, netip.Addr{})
		want := 0
		if self == owner {
			want = announceCount + 1 // and once more when the cluster settles
		}
		if len(broadcasts) != want || unicast != 0 {
			t.Errorf("%s (new owner %s): %d broadcasts, %d unicasts; want %d and 0", self, owner, len(broadcasts), unicast, want)
		}
	}

	// Race mode: when a host is lost, the survivors re-point every client
	// between them, each client once by one survivor.
	got := map[netip.Addr]int{}
	for _, self := range []string{"h1", "h3"} {
		r := NewRepointer(Repointer{
			Table: table, Mode: func(netip.Addr) gossip.Mode { return gossip.ModeRace },
			VIPs:   func() []netip.Addr { return []netip.Addr{testVIP} },
			Send:   func(_ netip.Addr, c arp.Client) error { got[c.IP]++; return nil },
			Logger: quietLog(),
		})
		r.plan(view(self, "h1", "h2", "h3"), table.Clients(), time.Now())
		if len(r.pending) != 0 {
			t.Fatalf("race mode re-points %d clients with nobody lost", len(r.pending))
		}
		v := view(self, "h1", "h3")
		r.plan(v, table.Clients(), time.Now())
		r.round(context.Background(), v, time.Now())
	}
	for _, c := range table.Clients() {
		if got[c.IP] != 1 {
			t.Fatalf("race mode: client %s re-pointed %d times, want once", c.IP, got[c.IP])
		}
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
