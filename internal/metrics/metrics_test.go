package metrics

import (
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/daemon/repoint"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/config"
	"github.com/arpshare/arpshare/internal/linkwatch"
	"github.com/arpshare/arpshare/internal/ownership"
)

var web = config.VIP{Name: "web", Address: netip.MustParseAddr("198.18.0.200"), Interface: "test0", Mode: policy.Hash}

type fakeHost struct{}

func (fakeHost) Health() map[netip.Addr]bool     { return map[netip.Addr]bool{web.Address: true} }
func (fakeHost) Draining() bool                  { return false }
func (fakeHost) OperatorDrained() bool           { return false }
func (fakeHost) DrainedFile() string             { return "/nonexistent" }
func (fakeHost) LinkFault(vip netip.Addr) string { return "" }

type fakeCluster struct{ v *gossip.View }

func (c fakeCluster) View() *gossip.View  { return c.v }
func (fakeCluster) HealthScore() int      { return 0 }
func (fakeCluster) LastChange() time.Time { return time.Unix(1000, 0) }

type fakeServed struct {
	cfg        *config.Config
	responders map[linkwatch.Key]*arp.Responder
}

func (s fakeServed) Served() (*config.Config, map[linkwatch.Key]*arp.Responder) {
	return s.cfg, s.responders
}

// TestCollector: one scrape of a host serving one VIP to two clients,
// alone in its view, sends every family with the values it reads.
func TestCollector(t *testing.T) {
	t.Parallel()
	cfg := &config.Config{Node: config.NodeConfig{Name: "h1", MaxClients: 1000, FastPath: config.FastPathOff}, VIPs: []config.VIP{web}}
	table := arp.NewClientTable(1000, time.Hour)
	for i := range 2 {
		table.Learn(web.Address, netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}, time.Now())
	}
	v := gossip.NewView("h1", []gossip.Member{{Name: "h1", State: gossip.StateAlive,
		Meta: gossip.Meta{Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: 1, VIPs: []netip.Addr{web.Address}}}}, 0)
	log := slog.New(slog.DiscardHandler)
	r := arp.NewResponder(arp.ResponderConfig{Interface: "test0", VIPs: []arp.SharedVIP{{Address: web.Address, Policy: web.Policy()}}, Table: table, View: v, Logger: log})
	rp := repoint.New(repoint.Config{Table: table, Logger: log})
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(Sources{Version: "test", Host: fakeHost{}, Cluster: fakeCluster{v},
		Served: fakeServed{cfg, map[linkwatch.Key]*arp.Responder{linkwatch.KeyOf(web): r}}, Repointer: rp, Table: table, Owners: &ownership.Cache{}}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			val := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			got[mf.GetName()] += val
		}
	}
	for name, want := range map[string]float64{
		MetricClientsKnown: 2, MetricClientsOwned: 2, MetricVIPInfo: 1, MetricVIPEligible: 1, MetricVIPHealthy: 1,
		MetricVIPServing:    0, // its interface is not open
		MetricEligibleHosts: 1, MetricClientsMax: 1000, MetricQuorum: 1, MetricNodeInfo: 1, MetricNodeDrained: 0,
		MetricInterfaceUp: 0, MetricBuildInfo: 1, MetricLastViewChange: 1000, MetricRepointBacklog: 0, MetricClientsTable: 2,
	} {
		if g, ok := got[name]; !ok || g != want {
			t.Errorf("%s = %v (present %v), want %v", name, g, ok, want)
		}
	}
}
