package daemon

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/arpshare/arpshare/internal/api"
	"github.com/arpshare/arpshare/internal/metrics"
)

// TestStatusAndScrapeReadTheCache: status and metrics show the counts of
// the ownership cache.
func TestStatusAndScrapeReadTheCache(t *testing.T) {
	t.Parallel()
	h1 := newCluster("h1").start(t, "h1", vipV4, mac1)
	for i := range 50 {
		h1.d.table.Learn(web, netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), net.HardwareAddr{2, 1, 0, 0, 0, byte(i)}, time.Now())
	}
	if s := h1.d.Status(); s.VIPs[0].Clients != 50 || s.VIPs[0].Owners["h1"] != 50 {
		t.Fatalf("status: %d clients, owners %v, want 50 and h1: 50", s.VIPs[0].Clients, s.VIPs[0].Owners)
	}
	var s api.Status
	got := map[string]float64{}
	eventually(t, "status and scrape show the cache's counts", func() bool {
		want := h1.d.owners.Get(h1.d.config(), h1.d.cluster.View(), h1.d.table)[web]
		s = h1.d.Status()
		mfs, err := h1.d.NewRegistry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if n := mf.GetName(); n == metrics.MetricClientsKnown || n == metrics.MetricClientsOwned {
				got[n] = mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return s.VIPs[0].Clients == want.Known && s.VIPs[0].Owners["h1"] == want.Owners["h1"] &&
			got[metrics.MetricClientsKnown] == float64(want.Known) && got[metrics.MetricClientsOwned] == float64(want.Owned)
	})
}
