package ownership

import (
	"net"
	"net/netip"
	"reflect"
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
	// A walk makes a new map of counts; a cached read returns the last.
	walks, last := 0, map[netip.Addr]Counts(nil)
	get := func(cfg *config.Config, v *gossip.View) Counts {
		m := c.Get(cfg, v, table)
		if reflect.ValueOf(m).UnsafePointer() != reflect.ValueOf(last).UnsafePointer() {
			walks++
		}
		last = m
		return m[countsVIP]
	}
	got := get(cfg, v)
	sum := 0
	for _, n := range got.Owners {
		sum += n
	}
	if got.Known != 1000 || sum != 1000 || len(got.Owners) != 3 || got.Owned != got.Owners["h1"] {
		t.Fatalf("counts %+v, want 1000 clients shared by h1..h3, h1's owned", got)
	}
	if get(cfg, v); walks != 1 {
		t.Errorf("nothing changed: %d walks, want 1", walks)
	}
	v2 := gossip.NewView("h1", v.Members[:2], 0)
	if got := get(cfg, v2); walks != 2 || got.Owners["h3"] != 0 || got.Owned != got.Owners["h1"] {
		t.Errorf("after h3 left: %d walks, counts %+v", walks, got)
	}
	table.Learn(countsVIP, netip.MustParseAddr("10.9.9.9"), net.HardwareAddr{2, 9, 9, 9, 9, 9}, time.Now())
	if get(cfg, v2); walks != 2 {
		t.Errorf("a table change within %s of the last walk: %d walks, want 2", maxAge, walks)
	}
	c.at = c.at.Add(-maxAge)
	if got := get(cfg, v2); walks != 3 || got.Known != 1001 {
		t.Errorf("a table change %s after the last walk: %d walks, %d known, want 3 and 1001", maxAge, walks, got.Known)
	}
	cfg2 := &config.Config{VIPs: []config.VIP{{Name: "web", Address: countsVIP, Interface: "eth0", Mode: policy.Race}}}
	if got := get(cfg2, v2); walks != 4 || len(got.Owners) != 0 || got.Known != 1001 {
		t.Errorf("after a reload to race mode: %d walks, counts %+v", walks, got)
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
			Count(cfg, v, table.All())
		}
	})
	b.Run("cached", func(b *testing.B) {
		var c Cache
		for b.Loop() {
			c.Get(cfg, v, table)
		}
	})
}
