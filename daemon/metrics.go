package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"runtime"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/gossip"
)

// Metric names that tests and the dashboard rely on.
const (
	MetricFramesReceived = "arpshare_responder_frames_received_total"
	MetricRepliesSent    = "arpshare_responder_replies_sent_total"
	MetricKernelFrames   = "arpshare_responder_kernel_frames_total"
	MetricConflicts      = "arpshare_responder_conflicts_total"
	MetricVIPInfo        = "arpshare_vip_info"
	MetricRepoints       = "arpshare_repoint_packets_sent_total"
	MetricRepointClients = "arpshare_repoint_clients_total"
	MetricRepointBacklog = "arpshare_repoint_backlog_seconds"
	MetricClientsKnown   = "arpshare_clients_known"
	MetricClientsEvicted = "arpshare_clients_evicted_total"
	MetricClientsRefused = "arpshare_clients_merge_refused_total"
	MetricClientsOwned   = "arpshare_clients_owned"
	MetricMembers        = "arpshare_gossip_members"
	MetricHealthScore    = "arpshare_gossip_health_score"
	MetricQuorum         = "arpshare_gossip_quorum"
	MetricJoinState      = "arpshare_gossip_join_state"
	MetricLastViewChange = "arpshare_gossip_last_view_change_timestamp_seconds"
	MetricVIPEligible    = "arpshare_vip_eligible"
	MetricVIPHealthy     = "arpshare_vip_healthy"
	MetricVIPServing     = "arpshare_vip_serving"
	MetricEligibleHosts  = "arpshare_vip_eligible_hosts"
	MetricClientsMax     = "arpshare_clients_max"
	MetricClientsTable   = "arpshare_clients_table_entries"
	MetricFastPath       = "arpshare_fast_path_attached"
	MetricNodeInfo       = "arpshare_node_info"
	MetricNodeDrained    = "arpshare_node_drained"
	MetricDrainedSince   = "arpshare_node_drained_since_timestamp_seconds"
	MetricInterfaceUp    = "arpshare_interface_up"
	MetricBuildInfo      = "arpshare_build_info"
	MetricConfigReloads  = "arpshare_config_reloads_total"
	MetricConfigLastLoad = "arpshare_config_last_reload_success"
)

var (
	descFrames = prometheus.NewDesc(MetricFramesReceived,
		"ARP (protocol arp) and Neighbor Discovery (protocol ndp) frames received on a serving interface, by the VIP they concern (its name; empty for none) and what became of them: answered, not_owner, conflict, peer_announce, reply, foreign_target, bad_sender_mac, mac_mismatch, bad_sender_ip or malformed.",
		[]string{"interface", "protocol", "vip", "outcome"}, nil)
	descReplies = prometheus.NewDesc(MetricRepliesSent,
		"ARP replies and neighbor advertisements sent to clients this host owns.", []string{"interface", "protocol", "vip"}, nil)
	descKernelFrames = prometheus.NewDesc(MetricKernelFrames,
		"Of the frames received, those the kernel fast path decided on (node.fast_path): answered, or not_owner (left to another host). They count in arpshare_responder_frames_received_total too.",
		[]string{"interface", "protocol", "vip", "outcome"}, nil)
	descConflicts = prometheus.NewDesc(MetricConflicts,
		"Frames from a machine outside the cluster that claims a VIP.", []string{"interface", "protocol", "vip"}, nil)
	descRepoints = prometheus.NewDesc(MetricRepoints,
		"Packets sent to move clients to this host: unicast, a request addressed to one client (ARP) or a solicitation (NDP); broadcast, a gratuitous ARP or unsolicited advertisement for a single-mode VIP.",
		[]string{"vip", "kind"}, nil)
	descRepointClients = prometheus.NewDesc(MetricRepointClients,
		"Clients re-pointed, by VIP and result: answered (the client answered a re-pointing request) or unanswered (not within a second of its last one).",
		[]string{"vip", "result"}, nil)
	descRepointBacklog = prometheus.NewDesc(MetricRepointBacklog,
		"How long the re-pointing round in progress will take at node.repoint_rate; 0 when idle.", nil, nil)
	descVIPInfo = prometheus.NewDesc(MetricVIPInfo,
		"Always 1: one series per configured VIP, whose labels give its address, interface and mode; join on vip.",
		[]string{"vip", "address", "interface", "mode"}, nil)
	descKnown = prometheus.NewDesc(MetricClientsKnown,
		"Clients of the VIP in this host's client table (counted again when the view or config changes, and at most once a second while the table does).", []string{"vip"}, nil)
	descEvicted = prometheus.NewDesc(MetricClientsEvicted,
		"Clients dropped from the full client table to make room for new ones (a flood of new senders, or node.max_clients too small).", nil, nil)
	descRefused = prometheus.NewDesc(MetricClientsRefused,
		"Entries of peers' client tables refused, by reason: vip_not_served, mac_not_unicast, bad_address, too_many (beyond the table's capacity in one exchange), too_many_protected (taken, but not as protected) or too_many_vips (the whole table).",
		[]string{"reason"}, nil)
	descOwned = prometheus.NewDesc(MetricClientsOwned,
		"Known clients of the VIP that this host answers (counted with arpshare_clients_known).", []string{"vip"}, nil)
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
		"1 if this host may answer for the VIP in its own view (alive, trusted, not draining, healthy), else 0.", []string{"vip"}, nil)
	descHealthy = prometheus.NewDesc(MetricVIPHealthy,
		"1 if the VIP's health check passes on this host and its link can serve the VIP (as this host gossips it), else 0.", []string{"vip"}, nil)
	descServing = prometheus.NewDesc(MetricVIPServing,
		"1 if this host answers its share of the VIP's clients: quorum, not rejected, not draining, interface open and link fine, check passing (or every host failing it), else 0.", []string{"vip"}, nil)
	descEligibleHosts = prometheus.NewDesc(MetricEligibleHosts,
		"Hosts that may answer for the VIP in this host's view; 0: nobody answers its clients.", []string{"vip"}, nil)
	descClientsMax = prometheus.NewDesc(MetricClientsMax,
		"The client table's capacity, all VIPs together (node.max_clients); a full table evicts.", nil, nil)
	descClientsTable = prometheus.NewDesc(MetricClientsTable,
		"Clients in the client table, all VIPs together, by list: probation or protected (a real machine is behind it; never more than 7/8 of node.max_clients).", []string{"list"}, nil)
	descFastPath = prometheus.NewDesc(MetricFastPath,
		"1 while the kernel fast path answers ARP on the interface, 0 while it answers from user space only (the kernel refused the program, or the interface is closed); only while node.fast_path is not off.", []string{"interface"}, nil)
	descNodeInfo = prometheus.NewDesc(MetricNodeInfo,
		"Always 1: maps the scrape's instance to this host's node name (the name in status and gossip); join on instance.", []string{"node", "version"}, nil)
	descNodeDrained = prometheus.NewDesc(MetricNodeDrained,
		"1 while this host is drained by `arpshare drain` (it survives restarts until `arpshare resume`), else 0; a stopping host is not counted.", nil, nil)
	descDrainedSince = prometheus.NewDesc(MetricDrainedSince,
		"When this host was drained, in seconds since the epoch (the drained state file's time: it survives restarts, and `arpshare drain` again does not move it); only while drained.", nil, nil)
	descIfaceUp = prometheus.NewDesc(MetricInterfaceUp,
		"1 while the serving interface is open and answering.", []string{"interface"}, nil)
	descBuild = prometheus.NewDesc(MetricBuildInfo,
		"Always 1; the labels say which build runs.", []string{"version", "goversion"}, nil)
)

// collector computes the daemon's metrics when scraped, from the sources
// `arpshare status` reads (the view, the client table, the responders'
// counters). Each reads them at its own moment, and they count differently
// (owned here: the clients this host answers; status: the clients of each
// owner, none in race mode), so a scrape and a status agree only where
// nothing changed in between.
type collector struct{ d *Daemon }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFrames, descKernelFrames, descReplies, descConflicts, descRepoints, descVIPInfo, descKnown, descEvicted, descRefused, descOwned,
		descRepointClients, descRepointBacklog, descMembers, descHealth, descQuorum, descJoin, descLastChange, descEligible, descHealthy, descIfaceUp, descBuild,
		descServing, descEligibleHosts, descClientsMax, descClientsTable, descNodeInfo, descNodeDrained, descDrainedSince, descFastPath} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	cfg := c.d.config()
	e := emitter{ch: ch, names: map[netip.Addr]string{}}
	for _, v := range cfg.VIPs {
		e.names[v.Address] = v.Name
	}
	c.collectResponders(e, cfg.Node.FastPath != FastPathOff)
	c.collectRepoint(e, cfg)
	v := c.d.cluster.View()
	c.collectClients(e, cfg, v)
	c.collectCluster(e, v)
	c.collectVIPs(e, cfg, v)
	c.collectNode(e, cfg)
	e.gauge(descBuild, 1, c.d.version, runtime.Version())
}

// collectRepoint sends the re-pointing results by VIP (both results of
// every configured VIP, so that rate() sees them from 0), and the backlog.
func (c collector) collectRepoint(e emitter, cfg *Config) {
	rs := c.d.repointer.Status()
	results := map[string]RepointResults{}
	for _, v := range cfg.VIPs {
		results[v.Name] = RepointResults{}
	}
	for vip, n := range rs.ByVIP {
		r := results[e.name(vip)]
		r.Confirmed += n.Confirmed
		r.Unanswered += n.Unanswered
		results[e.name(vip)] = r
	}
	for vip, r := range results {
		e.counter(descRepointClients, r.Confirmed, vip, "answered")
		e.counter(descRepointClients, r.Unanswered, vip, "unanswered")
	}
	e.gauge(descRepointBacklog, rs.Remaining.Seconds())
}

// collectNode sends this host's name, whether the operator drained it and
// since when.
func (c collector) collectNode(e emitter, cfg *Config) {
	e.gauge(descNodeInfo, 1, cfg.Node.Name, c.d.version)
	drained := c.d.state.operatorDrained()
	e.gauge(descNodeDrained, bool01(drained))
	if !drained {
		return
	}
	if fi, err := os.Stat(c.d.state.drainedFile()); err == nil {
		e.gauge(descDrainedSince, float64(fi.ModTime().UnixNano())/1e9)
	}
}

// operatorDrained reports whether `arpshare drain` drained this host (a
// stop drains too, but is not the operator's doing).
func (s *hostState) operatorDrained() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drained
}

// emitter sends the series of one scrape. Every series is summed by its
// labels before it is sent: two series with the same labels would fail the
// whole scrape. The vip label is the VIP's name everywhere; a VIP a reload
// removed keeps its counts under its address.
type emitter struct {
	ch    chan<- prometheus.Metric
	names map[netip.Addr]string // VIP names by address
}

func (e emitter) counter(desc *prometheus.Desc, v uint64, labels ...string) {
	e.ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
}

func (e emitter) gauge(desc *prometheus.Desc, v float64, labels ...string) {
	e.ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
}

// name is the vip label of a VIP's address.
func (e emitter) name(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	if n, ok := e.names[a]; ok {
		return n
	}
	return a.String()
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// collectResponders sends the responders' counters, whether each
// interface is up and, if fastPath, whether its ARP fast path is attached.
func (c collector) collectResponders(e emitter, fastPath bool) {
	type key [4]string
	counters := map[*prometheus.Desc]map[key]uint64{descFrames: {}, descKernelFrames: {}, descReplies: {}, descConflicts: {}, descRepoints: {}}
	up := map[string]bool{}
	for k, r := range c.d.responders.snapshot() {
		iface, proto := k.iface, "arp"
		if k.ipv6 {
			proto = "ndp"
		}
		s := r.Stats()
		for fk, n := range s.Frames {
			counters[descFrames][key{iface, proto, e.name(fk.VIP), string(fk.Outcome)}] += n
			if fk.Outcome == arp.Conflict {
				counters[descConflicts][key{iface, proto, e.name(fk.VIP)}] += n
			}
		}
		for fk, n := range s.Kernel {
			counters[descKernelFrames][key{iface, proto, e.name(fk.VIP), string(fk.Outcome)}] += n
		}
		for vip, n := range s.Replies {
			counters[descReplies][key{iface, proto, e.name(vip)}] += n
		}
		for vip, n := range s.Repoints {
			counters[descRepoints][key{e.name(vip), "unicast"}] += n
		}
		for vip, n := range s.Announces {
			counters[descRepoints][key{e.name(vip), "broadcast"}] += n
		}
		up[iface] = up[iface] || r.MAC() != nil
		if fastPath && !k.ipv6 {
			e.gauge(descFastPath, bool01(r.FastPathAttached()), iface)
		}
	}
	for desc, series := range counters {
		labels := map[*prometheus.Desc]int{descFrames: 4, descKernelFrames: 4, descReplies: 3, descConflicts: 3, descRepoints: 2}[desc]
		for k, n := range series {
			e.counter(desc, n, k[:labels]...)
		}
	}
	for iface, ok := range up {
		e.gauge(descIfaceUp, bool01(ok), iface)
	}
}

// collectClients sends the VIPs' info and their clients, known and owned.
func (c collector) collectClients(e emitter, cfg *Config, v *gossip.View) {
	d := c.d
	known, owned := map[string]int{}, map[string]int{}
	counts := d.ownerCounts(cfg, v)
	for _, vip := range cfg.VIPs {
		known[vip.Name] += counts[vip.Address].Known
		owned[vip.Name] += counts[vip.Address].Owned
		e.gauge(descVIPInfo, 1, vip.Name, vip.Address.String(), vip.Interface, string(vip.Mode))
	}
	for vip, n := range known {
		e.gauge(descKnown, float64(n), vip)
		e.gauge(descOwned, float64(owned[vip]), vip)
	}
	st := d.table.Stats()
	e.gauge(descClientsMax, float64(cfg.Node.MaxClients))
	e.gauge(descClientsTable, float64(st.Probation), "probation")
	e.gauge(descClientsTable, float64(st.Protected), "protected")
	e.counter(descEvicted, st.Evicted)
	for reason, n := range st.Rejected {
		e.counter(descRefused, n, string(reason))
	}
}

// collectCluster sends the members by state and this host's standing in
// the cluster.
func (c collector) collectCluster(e emitter, v *gossip.View) {
	states := map[string]int{"alive": 0, "dead": 0, "unreachable": 0}
	for _, m := range v.Members {
		state := string(m.State)
		if m.Unreachable {
			state = "unreachable"
		}
		states[state]++
	}
	for s, n := range states {
		e.gauge(descMembers, float64(n), s)
	}
	e.gauge(descHealth, float64(c.d.cluster.HealthScore()))
	e.gauge(descQuorum, bool01(v.Quorum()))
	for _, s := range []string{gossip.JoinMember, gossip.JoinAlone, gossip.JoinRejected} {
		e.gauge(descJoin, bool01(v.JoinState() == s), s)
	}
	if t := c.d.cluster.LastChange(); !t.IsZero() {
		e.gauge(descLastChange, float64(t.UnixNano())/1e9)
	}
}

// collectVIPs sends, for each VIP, this host's own facts (eligible,
// healthy, serving) and how many hosts are eligible in its view. Facts
// about the other hosts are theirs to send: one series per host and VIP,
// not one per pair of hosts.
func (c collector) collectVIPs(e emitter, cfg *Config, v *gossip.View) {
	healthy := c.d.state.health()
	responders := c.d.responders.snapshot()
	up := v.Serving() && !c.d.state.draining()
	for _, vip := range cfg.VIPs {
		eligible := v.Eligible(vip.Address)
		self := slices.ContainsFunc(eligible, func(m gossip.Candidate) bool { return m.Name == cfg.Node.Name })
		// As it gossips: a link that cannot serve counts as a failed check.
		linkOK := c.d.state.linkFault(vip.Address) == ""
		ok := healthy[vip.Address] && linkOK
		r := responders[vip.link()]
		open := r != nil && r.MAC() != nil
		serving := up && open && linkOK && (ok || v.Fallback(vip.Address))
		e.gauge(descEligible, bool01(self), vip.Name)
		e.gauge(descHealthy, bool01(ok), vip.Name)
		e.gauge(descServing, bool01(serving), vip.Name)
		e.gauge(descEligibleHosts, float64(len(eligible)), vip.Name)
	}
}

// NewRegistry returns a registry with the daemon's metrics and the Go
// runtime's and process's own.
func (d *Daemon) NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(d.collectors()...)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// collectors are the daemon's own metrics, every arpshare_ series.
func (d *Daemon) collectors() []prometheus.Collector {
	return []prometheus.Collector{collector{d}, d.reloads, d.lastReload, d.handover.Collector(), d.spread.Collector(), d.cluster.Collector(), d.sysctls.restored, d.serving.links}
}

// metricsServer serves /metrics on TCP.
type metricsServer struct {
	errorLog promhttp.Logger
	addr     string
	reg      *prometheus.Registry
	ready    chan struct{}
	limits   serverLimits // zero: metricsLimits
	// bound is the address listened on, once ready (addr may have port 0).
	bound net.Addr
}

func (m *metricsServer) String() string         { return "metrics on " + m.addr }
func (m *metricsServer) Ready() <-chan struct{} { return m.ready }

func (m *metricsServer) Run(ctx context.Context) error {
	mux := http.NewServeMux()
	// A collector's error drops its series and is logged and counted
	// (promhttp_metric_handler_errors_total), but never fails the scrape:
	// Prometheus would then lose every series of this host.
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		Registry: m.reg, ErrorHandling: promhttp.ContinueOnError, ErrorLog: m.errorLog,
	}))
	l, err := net.Listen("tcp", m.addr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	lim := m.limits
	if lim == (serverLimits{}) {
		lim = metricsLimits
	}
	m.bound = l.Addr()
	close(m.ready)
	if err := serve(ctx, l, mux, lim); err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	return nil
}

// handlePprof adds Go's pprof at /debug/pprof/ (the API socket's, never
// the metrics port's: a profile costs CPU, and cmdline and heap show what
// the daemon holds).
func handlePprof(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

// scrapeErrors logs the errors of a scrape.
type scrapeErrors struct{ log *slog.Logger }

func (s scrapeErrors) Println(v ...any) { s.log.Error("metrics scrape", "error", fmt.Sprint(v...)) }
