package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/config"
)

// series gathers n's metrics: each series by its name and labels
// ("name{k=v,...}" in the order the registry sorts them).
func series(t *testing.T, n *node) map[string]float64 {
	t.Helper()
	mfs, err := n.d.NewRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			got[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = value(m)
		}
	}
	return got
}

func value(m *dto.Metric) float64 {
	if m.Counter != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// TestHostFactsMetrics: each host tells its own facts (node name, drained,
// eligible, healthy, serving) and how many hosts are eligible per VIP, and
// nothing about the other hosts one by one; a drain shows in both hosts'
// series.
func TestHostFactsMetrics(t *testing.T) {
	t.Parallel()
	c := newCluster("h1", "h2")
	h1, h2 := c.startTwo(t, vipV4, vipV4)
	eventuallyView(t, h1, "h1 sees h2", func(v *gossip.View) bool { return len(v.Eligible(web)) == 2 })
	eventuallyView(t, h2, "h2 sees h1", func(v *gossip.View) bool { return len(v.Eligible(web)) == 2 })
	want := map[string]float64{
		"arpshare_node_info{node=h1,version=test}":                  1,
		"arpshare_node_drained{}":                                   0,
		"arpshare_vip_eligible{vip=web}":                            1,
		"arpshare_vip_healthy{vip=web}":                             1,
		"arpshare_vip_serving{vip=web}":                             1,
		"arpshare_vip_eligible_hosts{vip=web}":                      2,
		"arpshare_clients_max{}":                                    config.DefaultMaxClients,
		"arpshare_repoint_clients_total{result=unanswered,vip=web}": 0,
	}
	check := func(n *node, want map[string]float64) map[string]float64 {
		t.Helper()
		got := series(t, n)
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				t.Errorf("%s: %s = %v (present %v), want %v", n.name, k, g, ok, v)
			}
		}
		for k := range got {
			if strings.Contains(k, "host=") {
				t.Errorf("%s: %s: a host label, one series per pair of hosts", n.name, k)
			}
		}
		return got
	}
	check(h1, want)

	before := time.Now().Add(-time.Second)
	if err := h1.d.SetDrained(context.Background(), true, false); err != nil {
		t.Fatal(err)
	}
	eventuallyView(t, h2, "h2 sees h1 drained", func(v *gossip.View) bool { return len(v.Eligible(web)) == 1 })
	got := check(h1, map[string]float64{
		"arpshare_node_drained{}":        1,
		"arpshare_vip_eligible{vip=web}": 0,
		"arpshare_vip_serving{vip=web}":  0,
	})
	if since := got["arpshare_node_drained_since_timestamp_seconds{}"]; since < float64(before.Unix()) || since > float64(time.Now().Unix()+1) {
		t.Errorf("h1 drained since %v, want about %v", since, time.Now().Unix())
	}
	if err := h1.d.SetDrained(context.Background(), true, false); err != nil {
		t.Fatal(err)
	}
	if again := series(t, h1)["arpshare_node_drained_since_timestamp_seconds{}"]; again != got["arpshare_node_drained_since_timestamp_seconds{}"] {
		t.Errorf("a second drain moved drained since from %v to %v", got["arpshare_node_drained_since_timestamp_seconds{}"], again)
	}
	check(h2, map[string]float64{
		"arpshare_node_info{node=h2,version=test}": 1,
		"arpshare_vip_serving{vip=web}":            1,
		"arpshare_vip_eligible_hosts{vip=web}":     1,
	})
}
