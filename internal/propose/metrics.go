package propose

import (
	"github.com/prometheus/client_golang/prometheus"
)

// MetricSegments counts the segments the watching read, by outcome.
const MetricSegments = "arpshare_router_proposal_segments_total"

var descSegments = prometheus.NewDesc(MetricSegments,
	"First segments of new TCP connections to the VIPs read to propose routers (node.propose_routers), by outcome: counted, listed (from a router the VIP lists), rate_limited, table_full, from_cluster (a host's MAC: a spread flow), not_vip, bad_frame, dropped_kernel (the socket's buffer was full). Absent with node.propose_routers off.", []string{"outcome"}, nil)

// outcomes are the outcomes the metric always has, at 0 until seen.
var outcomes = []string{Counted, Listed, RateLimited, TableFull, FromCluster, NotVIP, BadFrame, "dropped_kernel"}

// Collector exports the watching's metrics.
func (w *Watcher) Collector() prometheus.Collector { return collector{w} }

type collector struct{ w *Watcher }

func (c collector) Describe(ch chan<- *prometheus.Desc) { ch <- descSegments }

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.w.Status()
	if !st.Enabled {
		return
	}
	for _, o := range outcomes {
		ch <- prometheus.MustNewConstMetric(descSegments, prometheus.CounterValue, float64(st.Segments[o]), o)
	}
}
