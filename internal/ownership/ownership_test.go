package ownership

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/config"
)

var countsVIP = netip.MustParseAddr("198.18.0.100")

// countsSetup is a config with one VIP, a view of hosts h1..h3 serving it
// and a table of n clients.
func countsSetup(n int) (*config.Config, *gossip.View, *arp.ClientTable) {
	cfg := &config.Config{VIPs: []config.VIP{{Name: "web", Address: countsVIP, Interface: "eth0", Mode: policy.Hash}}}
	var ms []gossip.Member
	for _, name := range []string{"h1", "h2", "h3"} {
		ms = append(ms, gossip.Member{Name: name, State: gossip.StateAlive, Meta: gossip.Meta{Weight: 1, VIPs: []netip.Addr{countsVIP}}})
	}
	table := arp.NewClientTable(n+1000, time.Hour)
	now := time.Now()
	for i := range n {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		table.Learn(countsVIP, ip, net.HardwareAddr{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}, now)
	}
	return cfg, gossip.NewView("h1", ms, 0), table
}

// TestOwnerCache: the counts are right, and a read walks the table again
// only when the view or config changed, or the table changed and the last
// walk is maxAge old.
func TestOwnerCache(t *testing.T) {
	t.Parallel()
	cfg, v, table := countsSetup(1000)
	var c Cache
	got := c.Get(cfg, v, table)[countsVIP]
	sum := 0
	for _, n := range got.Owners {
		sum += n
	}
	if got.Known != 1000 || sum != 1000 || len(got.Owners) != 3 || got.Owned != got.Owners["h1"] {
		t.Fatalf("counts %+v, want 1000 clients shared by h1..h3, h1's owned", got)
	}
	if c.Get(cfg, v, table); c.walks != 1 {
		t.Errorf("nothing changed: %d walks, want 1", c.walks)
	}
	v2 := gossip.NewView("h1", v.Members[:2], 0)
	if got := c.Get(cfg, v2, table)[countsVIP]; c.walks != 2 || got.Owners["h3"] != 0 || got.Owned != got.Owners["h1"] {
		t.Errorf("after h3 left: %d walks, counts %+v", c.walks, got)
	}
	table.Learn(countsVIP, netip.MustParseAddr("10.9.9.9"), net.HardwareAddr{2, 9, 9, 9, 9, 9}, time.Now())
	if c.Get(cfg, v2, table); c.walks != 2 {
		t.Errorf("a table change within %s of the last walk: %d walks, want 2", maxAge, c.walks)
	}
	c.at = c.at.Add(-maxAge)
	if got := c.Get(cfg, v2, table)[countsVIP]; c.walks != 3 || got.Known != 1001 {
		t.Errorf("a table change %s after the last walk: %d walks, %d known, want 3 and 1001", maxAge, c.walks, got.Known)
	}
	cfg2 := &config.Config{VIPs: []config.VIP{{Name: "web", Address: countsVIP, Interface: "eth0", Mode: policy.Race}}}
	if got := c.Get(cfg2, v2, table)[countsVIP]; c.walks != 4 || len(got.Owners) != 0 || got.Known != 1001 {
		t.Errorf("after a reload to race mode: %d walks, counts %+v", c.walks, got)
	}
}

// BenchmarkOwnerCounts is what a scrape or a status costs for the client
// counts with 100,000 clients: walk is every read before the cache (one
// rendezvous hash per client and VIP), cached is a read now.
//
//	go test -run '^$' -bench OwnerCounts ./internal/ownership
func BenchmarkOwnerCounts(b *testing.B) {
	cfg, v, table := countsSetup(100_000)
	b.Run("walk", func(b *testing.B) {
		for b.Loop() {
			Count(cfg, v, table.Clients())
		}
	})
	b.Run("cached", func(b *testing.B) {
		var c Cache
		for b.Loop() {
			c.Get(cfg, v, table)
		}
	})
}
