package gossip

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names.
const (
	MetricLogSuppressed   = "arpshare_gossip_log_lines_suppressed_total"
	MetricRefutations     = "arpshare_gossip_refutations_total"
	MetricMembersRejected = "arpshare_gossip_members_rejected"
	MetricTableBytes      = "arpshare_gossip_table_bytes_total"
	MetricTableStates     = "arpshare_gossip_table_states_total"
)

var (
	descLogSuppressed = prometheus.NewDesc(MetricLogSuppressed,
		"Log lines of memberlist's dropped by the rate limit, by level (a stranger's datagrams each make memberlist log one).", []string{"level"}, nil)
	descRefutations = prometheus.NewDesc(MetricRefutations,
		"Times a peer's state listed this host as suspect or dead, so that it refuted that and re-asserts its clients.", nil, nil)
	descRejected = prometheus.NewDesc(MetricMembersRejected,
		"Members in view whose gossiped metadata is rejected (never trusted with clients, not counted toward quorum), by reason.", []string{"reason"}, nil)
	descTableBytes = prometheus.NewDesc(MetricTableBytes,
		"Bytes of client table carried by memberlist's push-pull exchanges, before memberlist encrypts them, by direction (sent, received) and exchange (periodic: changes only; join: the whole table).", []string{"direction", "exchange"}, nil)
	descTableStates = prometheus.NewDesc(MetricTableStates,
		"Client-table states carried by memberlist's push-pull exchanges (one each way per exchange), by direction (sent, received) and exchange (periodic, join).", []string{"direction", "exchange"}, nil)
)

// Collector returns the cluster's own metrics: memberlist's log lines
// suppressed, refutations, members rejected, and the client table's bytes
// in push-pulls.
func (c *Cluster) Collector() prometheus.Collector { return collector{c} }

type collector struct{ c *Cluster }

func (m collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLogSuppressed
	ch <- descRefutations
	ch <- descRejected
	ch <- descTableBytes
	ch <- descTableStates
}

func (m collector) Collect(ch chan<- prometheus.Metric) {
	for level, n := range m.c.logs.Suppressed() {
		ch <- prometheus.MustNewConstMetric(descLogSuppressed, prometheus.CounterValue, float64(n), level)
	}
	ch <- prometheus.MustNewConstMetric(descRefutations, prometheus.CounterValue, float64(m.c.refutes.Load()))
	for dir, counts := range map[string]*[2]stateCount{"sent": &m.c.tableOut, "received": &m.c.tableIn} {
		for kind, exchange := range []string{"periodic", "join"} {
			ch <- prometheus.MustNewConstMetric(descTableBytes, prometheus.CounterValue, float64(counts[kind].bytes.Load()), dir, exchange)
			ch <- prometheus.MustNewConstMetric(descTableStates, prometheus.CounterValue, float64(counts[kind].n.Load()), dir, exchange)
		}
	}
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
