package metrics

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/internal/config"
	"github.com/arpshare/arpshare/internal/ownership"
)

// TestMergeRefusalsCounted: what a peer's client table brings that this
// host does not take is counted by reason in the metrics.
func TestMergeRefusalsCounted(t *testing.T) {
	t.Parallel()
	table := arp.NewClientTable(10, time.Hour)
	table.Serve([]netip.Addr{netip.MustParseAddr("198.18.0.200")})
	src := arp.NewClientTable(10, time.Hour)
	src.Learn(netip.MustParseAddr("198.18.0.250"), netip.MustParseAddr("198.18.1.1"), net.HardwareAddr{2, 0, 0, 0, 0, 1}, time.Now())
	if _, err := table.Merge(src.Encode(time.Now(), time.Time{}), time.Now()); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(tableCollector{collector{Sources{Table: table, Owners: &ownership.Cache{}}}})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != MetricClientsRefused {
			continue
		}
		for _, m := range f.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	if got["vip_not_served"] != 1 || len(got) != 1 {
		t.Errorf("%s = %v, want 1 vip_not_served", MetricClientsRefused, got)
	}
}

// tableCollector is the part of the collector about the clients.
type tableCollector struct{ c collector }

func (c tableCollector) Describe(ch chan<- *prometheus.Desc) { c.c.Describe(ch) }

func (c tableCollector) Collect(ch chan<- prometheus.Metric) {
	c.c.collectClients(emitter{ch: ch, names: map[netip.Addr]string{}}, &config.Config{}, nil)
}
