package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/arpshare/arpshare/gossip"
)

// Metric names that tests and the dashboard rely on.
const (
	MetricARPRequests    = "arpshare_arp_requests_total"
	MetricARPReplies     = "arpshare_arp_replies_sent_total"
	MetricConflicts      = "arpshare_arp_conflicts_total"
	MetricRepoints       = "arpshare_repoint_packets_sent_total"
	MetricRepointClients = "arpshare_repoint_clients_total"
	MetricRepointBacklog = "arpshare_repoint_backlog_seconds"
	MetricClientsKnown   = "arpshare_clients_known"
	MetricClientsEvicted = "arpshare_clients_evicted_total"
	MetricClientsOwned   = "arpshare_clients_owned"
	MetricMembers        = "arpshare_gossip_members"
	MetricHealthScore    = "arpshare_gossip_health_score"
	MetricQuorum         = "arpshare_gossip_quorum"
	MetricJoinState      = "arpshare_gossip_join_state"
	MetricLastViewChange = "arpshare_gossip_last_view_change_timestamp_seconds"
	MetricVIPEligible    = "arpshare_vip_eligible"
	MetricVIPHealthy     = "arpshare_vip_healthy"
	MetricInterfaceUp    = "arpshare_interface_up"
	MetricBuildInfo      = "arpshare_build_info"
	MetricConfigReloads  = "arpshare_config_reloads_total"
	MetricConfigLastLoad = "arpshare_config_last_reload_success"
)

var (
	descRequests = prometheus.NewDesc(MetricARPRequests,
		"ARP frames received, by the VIP they concern (empty for none) and what became of them: answered, not_owner, conflict, peer_announce, reply, foreign_target or malformed.",
		[]string{"interface", "vip", "outcome"}, nil)
	descReplies = prometheus.NewDesc(MetricARPReplies,
		"ARP replies sent to clients this host owns.", []string{"vip"}, nil)
	descConflicts = prometheus.NewDesc(MetricConflicts,
		"ARP frames from a machine outside the cluster that claims a VIP.", []string{"vip"}, nil)
	descRepoints = prometheus.NewDesc(MetricRepoints,
		"Packets sent to move clients to this host: unicast, a request addressed to one client (ARP) or a solicitation (NDP); broadcast, a gratuitous ARP or unsolicited advertisement for a single-mode VIP.",
		[]string{"vip", "kind"}, nil)
	descRepointClients = prometheus.NewDesc(MetricRepointClients,
		"Clients re-pointed, by result: answered (the client answered a re-pointing request) or unanswered (not within a second of its last one).",
		[]string{"result"}, nil)
	descRepointBacklog = prometheus.NewDesc(MetricRepointBacklog,
		"How long the re-pointing round in progress will take at node.repoint_rate; 0 when idle.", nil, nil)
	descKnown = prometheus.NewDesc(MetricClientsKnown,
		"Clients of the VIP in this host's client table.", []string{"vip"}, nil)
	descEvicted = prometheus.NewDesc(MetricClientsEvicted,
		"Clients dropped from the full client table to make room for new ones (a flood of new senders, or node.max_clients too small).", nil, nil)
	descOwned = prometheus.NewDesc(MetricClientsOwned,
		"Known clients of the VIP that this host answers.", []string{"vip"}, nil)
	descMembers = prometheus.NewDesc(MetricMembers,
		"Cluster members as this host sees them, by state (unreachable: listed by gossip, but not answering this host's probes).",
		[]string{"state"}, nil)
	descHealth = prometheus.NewDesc(MetricHealthScore,
		"memberlist's awareness score of this host: 0 is healthy, higher means its own probes are failing.", nil, nil)
	descQuorum = prometheus.NewDesc(MetricQuorum,
		"1 while this host sees a majority of gossip.expect hosts (always 1 when it is not set), else 0 and it answers nobody.", nil, nil)
	descJoin = prometheus.NewDesc(MetricJoinState,
		"1 for this host's join state, 0 for the others: member (in the cluster with live peers), alone (no peer answers at all) or rejected (peers answer but refuse it: it answers nobody).",
		[]string{"state"}, nil)
	descLastChange = prometheus.NewDesc(MetricLastViewChange,
		"When this host's view of the cluster last changed, in seconds since the epoch.", nil, nil)
	descEligible = prometheus.NewDesc(MetricVIPEligible,
		"1 if the host may answer for the VIP in this host's view.", []string{"vip", "host"}, nil)
	descHealthy = prometheus.NewDesc(MetricVIPHealthy,
		"1 if the VIP's health check passes on the host, as it gossips; 0 if it fails.", []string{"vip", "host"}, nil)
	descIfaceUp = prometheus.NewDesc(MetricInterfaceUp,
		"1 while the serving interface is open and answering.", []string{"interface"}, nil)
	descBuild = prometheus.NewDesc(MetricBuildInfo,
		"Always 1; the labels say which build runs.", []string{"version", "goversion"}, nil)
)

// collector computes the daemon's metrics when scraped, from the same state
// `arpshare status` reads, so the two can never disagree.
type collector struct{ d *Daemon }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRequests, descReplies, descConflicts, descRepoints, descKnown, descEvicted, descOwned,
		descRepointClients, descRepointBacklog, descMembers, descHealth, descQuorum, descJoin, descLastChange, descEligible, descHealthy, descIfaceUp, descBuild} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	bool01 := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}

	cfg := d.config()
	up := map[string]bool{}
	for k, r := range d.responderSnapshot() {
		iface := k.iface
		s := r.Stats()
		for k, n := range s.Frames {
			vip := ""
			if k.VIP.IsValid() {
				vip = k.VIP.String()
			}
			counter(descRequests, n, iface, vip, string(k.Outcome))
			if k.Outcome == "conflict" {
				counter(descConflicts, n, vip)
			}
		}
		for vip, n := range s.Replies {
			counter(descReplies, n, vip.String())
		}
		for vip, n := range s.Repoints {
			counter(descRepoints, n, vip.String(), "unicast")
		}
		for vip, n := range s.Announces {
			counter(descRepoints, n, vip.String(), "broadcast")
		}
		up[iface] = up[iface] || r.MAC() != nil
	}
	for iface, ok := range up {
		gauge(descIfaceUp, bool01(ok), iface)
	}
	rs := d.repointer.Status()
	counter(descRepointClients, rs.Confirmed, "answered")
	counter(descRepointClients, rs.Unanswered, "unanswered")
	gauge(descRepointBacklog, rs.Remaining.Seconds())

	v := d.cluster.View()
	known, owned := map[string]int{}, map[string]int{}
	for _, vip := range cfg.VIPs {
		known[vip.Address.String()], owned[vip.Address.String()] = 0, 0
	}
	for _, cl := range d.table.Clients() {
		known[cl.VIP.String()]++
		if v.Answers(cl.VIP, d.mode(cl.VIP), cl.IP) {
			owned[cl.VIP.String()]++
		}
	}
	for vip, n := range known {
		gauge(descKnown, float64(n), vip)
		gauge(descOwned, float64(owned[vip]), vip)
	}
	counter(descEvicted, d.table.Stats().Evicted)

	states := map[string]int{"alive": 0, "dead": 0, "unreachable": 0}
	for _, m := range v.Members {
		state := string(m.State)
		if m.Unreachable {
			state = "unreachable"
		}
		states[state]++
	}
	for s, n := range states {
		gauge(descMembers, float64(n), s)
	}
	gauge(descHealth, float64(d.cluster.HealthScore()))
	gauge(descQuorum, bool01(v.Quorum()))
	for _, s := range []string{gossip.JoinMember, gossip.JoinAlone, gossip.JoinRejected} {
		gauge(descJoin, bool01(v.JoinState() == s), s)
	}
	if t := d.cluster.LastChange(); !t.IsZero() {
		gauge(descLastChange, float64(t.UnixNano())/1e9)
	}
	for _, vip := range cfg.VIPs {
		eligible := v.Eligible(vip.Address)
		for _, m := range v.Members {
			if !m.Serves(vip.Address) || m.State == gossip.StateDead {
				continue
			}
			isEligible := false
			for _, c := range eligible {
				isEligible = isEligible || c.Name == m.Name
			}
			gauge(descEligible, bool01(isEligible), vip.Name, m.Name)
			gauge(descHealthy, bool01(!slices.Contains(m.Meta.Unhealthy, vip.Address)), vip.Name, m.Name)
		}
	}
	gauge(descBuild, 1, d.version, runtime.Version())
}

// NewRegistry returns a registry with the daemon's metrics and the Go
// runtime's and process's own.
func (d *Daemon) NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{d}, d.reloads, d.lastReload,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// metricsServer serves /metrics (and pprof, if enabled) on TCP.
type metricsServer struct {
	addr  string
	reg   *prometheus.Registry
	pprof bool
	ready chan struct{}
}

func (m *metricsServer) String() string         { return "metrics on " + m.addr }
func (m *metricsServer) Ready() <-chan struct{} { return m.ready }

func (m *metricsServer) Run(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg}))
	if m.pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	l, err := net.Listen("tcp", m.addr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	close(m.ready)
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics listener: %w", err)
	}
	return nil
}
