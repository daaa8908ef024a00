package gossip

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names.
const (
	MetricLogSuppressed   = "arpshare_gossip_log_lines_suppressed_total"
	MetricRefutations     = "arpshare_gossip_refutations_total"
	MetricMembersRejected = "arpshare_gossip_members_rejected"
)

var (
	descLogSuppressed = prometheus.NewDesc(MetricLogSuppressed,
		"Log lines of memberlist's dropped by the rate limit, by level (a stranger's datagrams each make memberlist log one).", []string{"level"}, nil)
	descRefutations = prometheus.NewDesc(MetricRefutations,
		"Times a peer's state listed this host as suspect or dead, so that it refuted that and re-asserts its clients.", nil, nil)
	descRejected = prometheus.NewDesc(MetricMembersRejected,
		"Members in view whose gossiped metadata is rejected (never trusted with clients, not counted toward quorum), by reason.", []string{"reason"}, nil)
)

// Collector returns the cluster's own metrics: memberlist's log lines
// suppressed, refutations, and members rejected.
func (c *Cluster) Collector() prometheus.Collector { return collector{c} }

type collector struct{ c *Cluster }

func (m collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLogSuppressed
	ch <- descRefutations
	ch <- descRejected
}

func (m collector) Collect(ch chan<- prometheus.Metric) {
	for level, n := range m.c.logs.Suppressed() {
		ch <- prometheus.MustNewConstMetric(descLogSuppressed, prometheus.CounterValue, float64(n), level)
	}
	ch <- prometheus.MustNewConstMetric(descRefutations, prometheus.CounterValue, float64(m.c.refutes.Load()))
	rejected := map[string]int{}
	for _, r := range []string{RejectDecode, RejectVersion, RejectAlgorithm, RejectWeight, RejectVIPs, RejectMACs} {
		rejected[r] = 0
	}
	for _, mem := range m.c.View().Members {
		if mem.Reason != "" {
			rejected[mem.Reason]++
		}
	}
	for r, n := range rejected {
		ch <- prometheus.MustNewConstMetric(descRejected, prometheus.GaugeValue, float64(n), r)
	}
}
