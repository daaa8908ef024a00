package daemon

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/api"
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
// walk is ownerCountsAge old.
func TestOwnerCache(t *testing.T) {
	t.Parallel()
	cfg, v, table := countsSetup(1000)
	var c ownerCache
	got := c.get(cfg, v, table)[countsVIP]
	sum := 0
	for _, n := range got.Owners {
		sum += n
	}
	if got.Known != 1000 || sum != 1000 || len(got.Owners) != 3 || got.Owned != got.Owners["h1"] {
		t.Fatalf("counts %+v, want 1000 clients shared by h1..h3, h1's owned", got)
	}
	if c.get(cfg, v, table); c.walks != 1 {
		t.Errorf("nothing changed: %d walks, want 1", c.walks)
	}
	v2 := gossip.NewView("h1", v.Members[:2], 0)
	if got := c.get(cfg, v2, table)[countsVIP]; c.walks != 2 || got.Owners["h3"] != 0 || got.Owned != got.Owners["h1"] {
		t.Errorf("after h3 left: %d walks, counts %+v", c.walks, got)
	}
	table.Learn(countsVIP, netip.MustParseAddr("10.9.9.9"), net.HardwareAddr{2, 9, 9, 9, 9, 9}, time.Now())
	if c.get(cfg, v2, table); c.walks != 2 {
		t.Errorf("a table change within %s of the last walk: %d walks, want 2", ownerCountsAge, c.walks)
	}
	c.at = c.at.Add(-ownerCountsAge)
	if got := c.get(cfg, v2, table)[countsVIP]; c.walks != 3 || got.Known != 1001 {
		t.Errorf("a table change %s after the last walk: %d walks, %d known, want 3 and 1001", ownerCountsAge, c.walks, got.Known)
	}
	cfg2 := &config.Config{VIPs: []config.VIP{{Name: "web", Address: countsVIP, Interface: "eth0", Mode: policy.Race}}}
	if got := c.get(cfg2, v2, table)[countsVIP]; c.walks != 4 || len(got.Owners) != 0 || got.Known != 1001 {
		t.Errorf("after a reload to race mode: %d walks, counts %+v", c.walks, got)
	}
}

// BenchmarkOwnerCounts is what a scrape or a status costs for the client
// counts with 100,000 clients: walk is every read before the cache (one
// rendezvous hash per client and VIP), cached is a read now.
//
//	go test -run '^$' -bench OwnerCounts ./daemon
func BenchmarkOwnerCounts(b *testing.B) {
	cfg, v, table := countsSetup(100_000)
	b.Run("walk", func(b *testing.B) {
		for b.Loop() {
			countOwners(cfg, v, table.Clients())
		}
	})
	b.Run("cached", func(b *testing.B) {
		var c ownerCache
		for b.Loop() {
			c.get(cfg, v, table)
		}
	})
}

// TestStatusAndScrapeReadTheCache: status and metrics show the cached
// counts, not a walk of their own: counts planted in the cache show in
// both while nothing changes.
func TestStatusAndScrapeReadTheCache(t *testing.T) {
	t.Parallel()
	h1 := newCluster("h1").start(t, "h1", vipV4, mac1)
	for i := range 50 {
		h1.d.table.Learn(web, netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), net.HardwareAddr{2, 1, 0, 0, 0, byte(i)}, time.Now())
	}
	if s := h1.d.Status(); s.VIPs[0].Clients != 50 || s.VIPs[0].Owners["h1"] != 50 {
		t.Fatalf("status: %d clients, owners %v, want 50 and h1: 50", s.VIPs[0].Clients, s.VIPs[0].Owners)
	}
	// Planted counts last until the view changes: plant them again then.
	c := &h1.d.owners
	var s api.Status
	got := map[string]float64{}
	eventually(t, "status and scrape show the cached counts", func() bool {
		c.mu.Lock()
		c.byVIP = map[netip.Addr]vipCounts{web: {Known: 12345, Owned: 777, Owners: map[string]int{"h1": 777, "h9": 11568}}}
		c.at = time.Now().Add(time.Hour) // and no walk for an hour, whatever the table does
		c.mu.Unlock()
		s = h1.d.Status()
		mfs, err := h1.d.NewRegistry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if n := mf.GetName(); n == MetricClientsKnown || n == MetricClientsOwned {
				got[n] = mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return s.VIPs[0].Clients == 12345 && s.VIPs[0].Owners["h9"] == 11568 && got[MetricClientsKnown] == 12345 && got[MetricClientsOwned] == 777
	})
}
