package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/daemon/repoint"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/api"
	"github.com/arpshare/arpshare/internal/bpf/fastpath"
	"github.com/arpshare/arpshare/internal/bpf/handover"
	"github.com/arpshare/arpshare/internal/bpf/spread"
	"github.com/arpshare/arpshare/internal/config"
	"github.com/arpshare/arpshare/internal/drain"
	"github.com/arpshare/arpshare/internal/hostnet"
	"github.com/arpshare/arpshare/internal/linkwatch"
	"github.com/arpshare/arpshare/internal/metrics"
	"github.com/arpshare/arpshare/internal/ownership"
	"github.com/arpshare/arpshare/internal/propose"
	"github.com/arpshare/arpshare/internal/task"
	"github.com/arpshare/arpshare/internal/viewlog"
)

const (
	// drainWait is how long a host that asks to drain or stops waits for
	// that, and the other hosts' news, to spread before it looks whether
	// another host stays eligible (see drain.go): gossip reaches every host
	// within a few gossip intervals (100 ms).
	drainWait = time.Second
	// leaveTimeout bounds how long the leave message may take to go out.
	leaveTimeout = time.Second
	// Client table: a client refreshes by unicast to its owner only, so
	// other hosts keep it for hours.
	clientTTL = 4 * time.Hour
)

// Daemon is arpshare on one host. It wires the parts together: the cluster
// tells it when the view changes, the health checks when a VIP's health
// does, the responders when an interface opens; the rest goes from part to
// part without it.
type Daemon struct {
	log        *slog.Logger
	version    string
	seams      seams
	state      *hostState
	table      *arp.ClientTable
	cluster    *gossip.Cluster
	owners     ownership.Cache // status's and metrics' client counts
	repointer  *repoint.Repointer
	handover   *handover.Handover
	spread     *spread.Spreader
	propose    *propose.Watcher
	serving    *vipServer
	responders *responders // serving's, for the status and metrics
	watch      *viewlog.Watch
	views      *viewTask // hands views to the handover and the repointer
	api        *api.Server
	metrics    *api.MetricsServer // nil without [api] metrics
	sysctls    *hostnet.SysctlGuard
	reports    *repointReports
	drainer    *drain.Drainer

	reloads    *prometheus.CounterVec
	lastReload prometheus.Gauge
}

// seams are what tests replace: the kernel's side of the host, its sockets,
// the gossip network and systemd.
type seams struct {
	host hostnet.Host
	// listen and listenNDP open a serving interface; nil: raw sockets.
	listen    func(iface string) (arp.Conn, net.HardwareAddr, error)
	listenNDP func(iface string) (arp.NDPConn, net.HardwareAddr, error)
	// transport carries gossip; nil: memberlist's UDP and TCP sockets.
	transport memberlist.Transport
	notify    func(state string) // to systemd
	// links reports the kernel's interfaces and lo's addresses; nil: netlink.
	links linkwatch.Source
	// drainWait replaces drainWait; 0: drainWait.
	drainWait time.Duration
	// sysctlDir is where the ARP sysctls are kept (ProcNetConf); "":
	// nowhere, they are not guarded.
	sysctlDir string
}

// New wires a daemon from a checked config.
func New(cfg *config.Config, log *slog.Logger, version string) *Daemon {
	return newDaemon(cfg, log, version, seams{host: hostnet.Kernel{}, notify: sdNotify(log), sysctlDir: hostnet.ProcNetConf})
}

func newDaemon(cfg *config.Config, log *slog.Logger, version string, sm seams) *Daemon {
	if sm.drainWait == 0 {
		sm.drainWait = drainWait
	}
	if sm.links == nil {
		sm.links = linkwatch.Kernel{}
	}
	d := &Daemon{
		log: log, version: version, seams: sm,
		state:      newHostState(cfg),
		table:      arp.NewClientTable(cfg.Node.MaxClients, clientTTL),
		responders: newResponders(),
		watch:      viewlog.New(),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metrics.MetricConfigReloads, Help: "Config reloads (SIGHUP), by result: applied, failed (the config was taken but a VIP could not be plumbed: the others are applied) or refused.",
		}, []string{"result"}),
		lastReload: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: metrics.MetricConfigLastLoad, Help: "1 if the last config reload was applied whole, 0 if it was refused or a VIP failed.",
		}),
	}
	d.lastReload.Set(1)
	if w := d.state.warning; w != "" {
		log.Warn(w)
	}
	if d.state.Draining() {
		log.Warn("starting drained: this host answers no client until `arpshare resume`")
	}
	d.sysctls = hostnet.NewSysctlGuard(sm.sysctlDir, d.state, log)
	d.reports = newRepointReports(d.state)
	d.repointer = repoint.New(repoint.Config{
		Table: d.table, Logger: log, VIPs: d.state, Send: d.responders,
		Rate:     cfg.Node.RepointRate,
		Reassert: cfg.Node.ReassertInterval, ReassertRate: cfg.Node.ReassertRate,
		Progress: d.reports,
	})
	d.handover = handover.New(cfg.Handover, cfg.Node.Name, cfg.Node.MaxClients, handoverSource{d.state, d.table}, log.With("component", "handover"))
	d.spread = spread.New(cfg.Node.Name, cfg.Handover.FlowGrace(), spread.FromConfig(d.state.Config, d.table), log.With("component", "spread"))
	d.spread.OnJoined = d.reports.metaChanged
	d.state.spreadHeld = d.spread.Held
	d.views = newViewTask(d.spread, d.handover, d.repointer)
	d.propose = propose.FromConfig(d.state.Config, d.table, log.With("component", "propose"))
	d.cluster = gossip.NewCluster(gossip.ClusterConfig{
		Name: cfg.Node.Name, Bind: cfg.Gossip.Bind, Peers: cfg.Gossip.Peers,
		Keys: cfg.Gossip.Keys, KeyFile: cfg.Gossip.KeyFile, Label: cfg.Gossip.Cluster,
		ProbeInterval: cfg.Gossip.ProbeInterval, ProbeTimeout: cfg.Gossip.ProbeTimeout,
		SuspicionMult: cfg.Gossip.SuspicionMult, GossipInterval: cfg.Gossip.GossipInterval,
		Expect:    cfg.Gossip.Expect,
		Software:  version,
		Transport: sm.transport,
		Meta:      d.state.meta,
		State:     arp.NewSharedTable(d.table, log),
		OnChange:  d.viewChanged,
		OnRefute:  d.repointer.Refuted,
		Logger:    log.With("component", "gossip"),
	})
	d.reports.cluster = d.cluster
	d.drainer = drain.New(log, d.state, d.cluster, sm.drainWait)
	d.serving = &vipServer{log: log, seams: sm, state: d.state, table: d.table, cluster: d.cluster,
		responders: d.responders, checks: newChecks()}
	d.serving.watchLinks(sm.links)
	d.api = api.NewServer(cfg.API.Socket, d, log, cfg.API.Pprof)
	if cfg.API.Metrics != "" {
		d.metrics = api.NewMetricsServer(cfg.API.Metrics, d.NewRegistry(), log)
	}
	return d
}

// config returns the config in force.
func (d *Daemon) config() *config.Config { return d.state.Config() }

// Run serves until ctx ends, then stops gracefully: it drains, gives the
// other hosts time to re-point its clients, leaves the cluster and removes
// its VIPs. SIGHUP reloads the config.
func (d *Daemon) Run(ctx context.Context, configPath string) error {
	if d.config().Node.FastPath == config.FastPathOn {
		if err := fastpath.Check(); err != nil {
			return fmt.Errorf("node.fast_path = \"on\": %w", err)
		}
	}
	inner, cancel := context.WithCancel(context.Background())
	defer cancel()
	sup := task.NewSupervisor(inner, d.log)
	d.serving.tasks = sup
	defer d.serving.removeVIPs()

	cfg := d.config()
	for _, w := range cfg.Warnings {
		d.log.Warn(w)
	}
	if err := d.serving.apply(nil, cfg); err != nil {
		cancel()
		sup.Wait()
		return err
	}
	d.handover.Open()
	d.spread.Update(nil) // loads the program if a VIP has routers

	all := []task.Task{d.cluster, task.ReadyOnStart(d.views), task.ReadyOnStart(d.repointer), task.ReadyOnStart(d.handover), task.ReadyOnStart(d.spread), task.ReadyOnStart(d.propose), d.api,
		d.newReloader(configPath), task.ReadyOnStart(d.newWatchdog()),
		task.ReadyOnStart(d.sysctls), task.ReadyOnStart(d.reports)}
	if d.metrics != nil {
		all = append(all, d.metrics)
	}
	for _, t := range all {
		sup.Go(t)
	}
	// A missing interface does not hold READY back (systemd would time
	// the start out), so the responders are not waited for: STATUS says
	// what the daemon waits for.
	if sup.Ready(ctx, all...) {
		d.log.Info("arpshare ready", "node", cfg.Node.Name, "version", d.version, "vip_count", len(cfg.VIPs))
		d.seams.notify("READY=1\nSTATUS=" + d.statusLine())
		if w := d.state.waitingFor(); len(w) > 0 {
			d.log.Warn("ready, but not answering on every interface yet: waiting for it to appear", "interfaces", w)
		}
	}
	select {
	case <-sup.Failed():
		// A task failed; wait returns its error.
	case <-ctx.Done():
		d.stop(sup.Context())
	}
	cancel()
	return sup.Wait()
}

// stop is a graceful stop: drain (unless this host is the last eligible
// one: see drain.Drainer.Stop), let the others take the clients and the connections
// handed to this host end, leave.
func (d *Daemon) stop(ctx context.Context) {
	d.seams.notify("STOPPING=1\nSTATUS=draining")
	drained, guard := d.drainer.Stop(ctx)
	if drained {
		// The connections other hosts handed to this one end, up to
		// handover.stop_wait.
		d.seams.notify("STATUS=draining: waiting for open connections")
		cfg := d.config()
		var vips []netip.Addr
		for _, v := range cfg.VIPs {
			vips = append(vips, v.Address)
		}
		d.handover.WaitConnections(ctx, vips, cfg.Handover.StopWait)
	}
	guard()
	if err := d.cluster.Leave(leaveTimeout); err != nil {
		d.log.Warn("leave cluster", "error", err)
	}
}
