package spread

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names.
const (
	MetricAvailable = "arpshare_spread_available"
	MetricPackets   = "arpshare_spread_packets_total"
	MetricHosts     = "arpshare_spread_hosts"
)

const helpAvailable = "1 if the program that spreads routed clients' flows is loaded, 0 if a VIP has routers but their clients all go to the router's director. Absent without vip.routers."

var (
	descAvailable = prometheus.NewDesc(MetricAvailable, helpAvailable, nil, nil)
	descPackets   = prometheus.NewDesc(MetricPackets,
		"Packets to VIPs with routers that reached this host, by outcome: spread (sent to another host), local (served here), not_router (from a client on the segment), no_table (no host to spread to), bad_packet (headers cut short), bad_mac (a table names a group or zero MAC: not sent), received (spread here by a director), handed (a TCP segment of a flow that moved here in a planned move, with no socket here: to the host that served it), loop (not handed back where it came from, or TTL spent).", []string{"outcome"}, nil)
	descHosts = prometheus.NewDesc(MetricHosts,
		"Hosts in a VIP's spread table.", []string{"vip"}, nil)
)

// Collector exports the spreading's metrics.
func (s *Spreader) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Spreader }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descAvailable
	ch <- descPackets
	ch <- descHosts
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Status()
	if !st.Configured {
		return
	}
	available := 0.0
	if st.Active {
		available = 1
	}
	ch <- prometheus.MustNewConstMetric(descAvailable, prometheus.GaugeValue, available)
	for _, name := range outcomeNames {
		ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(st.Packets[name]), name)
	}
	for _, v := range st.VIPs {
		ch <- prometheus.MustNewConstMetric(descHosts, prometheus.GaugeValue, float64(len(v.Hosts)), v.Name)
	}
}
