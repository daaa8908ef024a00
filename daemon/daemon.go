package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/daemon/handover"
	"github.com/arpshare/arpshare/gossip"
)

const (
	// drainWait is how long a stopping host keeps accepting traffic after
	// telling the cluster it drains: gossip reaches every host within a few
	// gossip intervals, and the new owners send their first re-point at once.
	drainWait = time.Second
	// leaveTimeout bounds how long the leave message may take to go out.
	leaveTimeout = time.Second
	// Client table: a client refreshes by unicast to its owner only, so
	// other hosts keep it for hours.
	clientTTL = 4 * time.Hour
)

// task is a long-running part of the daemon.
type task interface {
	Run(ctx context.Context) error
	String() string
}

// Daemon is arpshare on one host.
type Daemon struct {
	log       *slog.Logger
	version   string
	table     *arp.ClientTable
	cluster   *gossip.Cluster
	repointer *Repointer
	handover  *handover.Handover
	api       *api
	metrics   *metricsServer // nil without [api] metrics

	reloads    *prometheus.CounterVec
	lastReload prometheus.Gauge

	mu         sync.Mutex
	cfg        *Config
	responders map[linkKey]*running[*arp.Responder]
	checks     map[netip.Addr]*running[*healthCheck]
	dynamic    context.Context // parent of responders and checks, once Run starts
	dynWG      sync.WaitGroup
	drained    bool // by the operator; survives restarts
	stopping   bool
	healthy    map[netip.Addr]bool
	quorum     bool
	fallback   map[netip.Addr]bool
	macs       map[string]net.HardwareAddr // by interface, while open
}

// running is a task the daemon starts and stops as the config changes.
type running[T task] struct {
	t      T
	cancel context.CancelFunc
	done   chan struct{}
}

// New wires a daemon from a checked config.
func New(cfg *Config, log *slog.Logger, version string) *Daemon {
	d := &Daemon{
		log: log, version: version,
		table:      arp.NewClientTable(cfg.Node.MaxClients, clientTTL),
		responders: map[linkKey]*running[*arp.Responder]{},
		checks:     map[netip.Addr]*running[*healthCheck]{},
		macs:       map[string]net.HardwareAddr{},
		healthy:    map[netip.Addr]bool{},
		fallback:   map[netip.Addr]bool{},
		quorum:     true,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricConfigReloads, Help: "Config reloads (SIGHUP), by result: applied or refused.",
		}, []string{"result"}),
		lastReload: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: MetricConfigLastLoad, Help: "1 if the last config reload was applied, 0 if it was refused.",
		}),
	}
	d.lastReload.Set(1)
	d.cfg = cfg
	if _, err := os.Stat(d.drainedFile()); err == nil {
		d.drained = true
		log.Warn("starting drained: this host answers no client until `arpshare resume`")
	}
	d.repointer = NewRepointer(Repointer{
		Table: d.table, Logger: log, Served: d, Send: sender{d},
		Rate:     cfg.Node.RepointRate,
		Reassert: cfg.Node.ReassertInterval,
	})
	d.handover = handover.New(cfg.Handover, cfg.Node.Name, cfg.Node.MaxClients, handoverSource{d}, log.With("component", "handover"))
	d.cluster = gossip.NewCluster(gossip.ClusterConfig{
		Name: cfg.Node.Name, Bind: cfg.Gossip.Bind, Peers: cfg.Gossip.Peers,
		Keys: cfg.Gossip.Keys, KeyFile: cfg.Gossip.KeyFile, Label: cfg.Gossip.Cluster,
		ProbeInterval: cfg.Gossip.ProbeInterval, ProbeTimeout: cfg.Gossip.ProbeTimeout,
		SuspicionMult: cfg.Gossip.SuspicionMult, GossipInterval: cfg.Gossip.GossipInterval,
		Expect:   cfg.Gossip.Expect,
		Meta:     d.meta,
		State:    sharedTable{d.table, log},
		OnChange: d.viewChanged,
		OnRefute: d.repointer.Refuted,
		Logger:   log.With("component", "gossip"),
	})
	d.api = &api{path: cfg.API.Socket, daemon: d, ready: make(chan struct{})}
	if cfg.API.Metrics != "" {
		d.metrics = &metricsServer{errorLog: scrapeErrors{log}, addr: cfg.API.Metrics, reg: d.NewRegistry(), pprof: cfg.API.Pprof, ready: make(chan struct{})}
	}
	return d
}

// config returns the config in force.
func (d *Daemon) config() *Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// policy returns how a VIP's clients are shared.
func (d *Daemon) policy(vip netip.Addr) policy.Policy {
	for _, v := range d.config().VIPs {
		if v.Address == vip {
			return v.Policy()
		}
	}
	return policy.Of(policy.Hash)
}

// VIPs returns the VIPs in force and their policies.
func (d *Daemon) VIPs() []arp.VIP {
	var out []arp.VIP
	for _, v := range d.config().VIPs {
		out = append(out, arp.VIP{Address: v.Address, Policy: v.Policy()})
	}
	return out
}

// linkKey names a responder: an interface and an address family.
type linkKey struct {
	iface string
	ipv6  bool
}

func (v VIP) link() linkKey { return linkKey{v.Interface, v.Address.Is6()} }

func (d *Daemon) responderSnapshot() map[linkKey]*arp.Responder {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := map[linkKey]*arp.Responder{}
	for k, r := range d.responders {
		m[k] = r.t
	}
	return m
}

// Run serves until ctx ends, then stops gracefully: it drains, gives the
// other hosts time to re-point its clients, leaves the cluster and removes
// its VIPs. SIGHUP reloads the config.
func (d *Daemon) Run(ctx context.Context, configPath string) error {
	inner, cancel := context.WithCancel(context.Background())
	defer cancel()
	g, gctx := errgroup.WithContext(inner)

	cfg := d.config()
	if cfg.Gossip.Expect == 0 {
		d.log.Warn("gossip.expect is not set: if the gossip network splits while clients still reach both sides, hosts on both sides answer the same clients")
	}
	d.mu.Lock()
	d.dynamic = gctx
	d.mu.Unlock()
	defer func() {
		d.stopAll()
		d.removeVIPs()
	}()
	if err := d.apply(nil, cfg); err != nil {
		return err
	}
	d.handover.Open()

	tasks := []task{d.cluster, d.repointer, d.handover, d.api, &reloader{d: d, path: configPath}, &watchdog{d: d}}
	ready := []<-chan struct{}{d.cluster.Ready(), d.api.Ready()}
	if d.metrics != nil {
		tasks = append(tasks, d.metrics)
		ready = append(ready, d.metrics.Ready())
	}
	// A missing interface does not hold READY back: systemd would time the
	// start out. STATUS says what the daemon waits for.
	for _, t := range tasks {
		g.Go(func() error {
			if err := t.Run(gctx); err != nil {
				return fmt.Errorf("%s: %w", t, err)
			}
			return nil
		})
	}

	for _, r := range ready {
		select {
		case <-r:
		case <-gctx.Done():
		case <-ctx.Done():
		}
	}
	if ctx.Err() == nil && gctx.Err() == nil {
		d.log.Info("arpshare ready", "node", cfg.Node.Name, "version", d.version, "vips", len(cfg.VIPs))
		d.notify("READY=1\nSTATUS=" + d.statusLine())
		if w := d.waitingFor(); len(w) > 0 {
			d.log.Warn("ready, but not answering on every interface yet: waiting for it to appear", "interfaces", w)
		}
	}

	select {
	case <-gctx.Done():
		// A task failed; Wait returns its error.
	case <-ctx.Done():
		d.notify("STOPPING=1\nSTATUS=draining")
		d.log.Info("stopping: draining so that other hosts take this host's clients")
		d.mu.Lock()
		d.stopping = true
		d.mu.Unlock()
		if err := d.cluster.UpdateMeta(drainWait); err != nil {
			d.log.Warn("announce draining", "error", err)
		}
		sleepCtx(gctx, drainWait)
		d.waitHandedOver(gctx)
		if err := d.cluster.Leave(leaveTimeout); err != nil {
			d.log.Warn("leave cluster", "error", err)
		}
	}
	cancel()
	return g.Wait()
}

func (d *Daemon) removeVIPs() {
	for _, v := range d.config().VIPs {
		if err := removeVIP(v.Address); err != nil {
			d.log.Error("remove VIP", "vip", v.Name, "error", err)
		}
	}
}

func (d *Daemon) notify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		d.log.Debug("notify systemd", "error", err)
	}
}

func (d *Daemon) statusLine() string {
	v := d.cluster.View()
	live := 0
	for _, m := range v.Members {
		if m.State == gossip.StateAlive {
			live++
		}
	}
	line := fmt.Sprintf("%d VIPs, %d live hosts, %d known clients", len(d.config().VIPs), live, d.table.Len())
	if w := d.waitingFor(); len(w) > 0 {
		line += "; waiting for interface " + strings.Join(w, ", ")
	}
	return line
}

func (d *Daemon) viewChanged(v *gossip.View) {
	d.mu.Lock()
	quorumChanged := d.quorum != v.Quorum()
	d.quorum = v.Quorum()
	var fallbackNow, fallbackOver []string
	for _, vip := range d.cfg.VIPs {
		if fb := v.Fallback(vip.Address); fb != d.fallback[vip.Address] {
			d.fallback[vip.Address] = fb
			if fb {
				fallbackNow = append(fallbackNow, vip.Name)
			} else {
				fallbackOver = append(fallbackOver, vip.Name)
			}
		}
	}
	d.mu.Unlock()
	switch {
	case quorumChanged && !v.Quorum():
		d.log.Error("lost quorum: this host sees fewer than a majority of the expected hosts and stops answering", "alive", v.Alive(), "expect", v.Expect)
	case quorumChanged:
		d.log.Info("quorum regained: answering again", "alive", v.Alive(), "expect", v.Expect)
	}
	if len(fallbackNow) > 0 {
		d.log.Error("no host passes the health check: every live host answers anyway", "vips", fallbackNow)
	}
	if len(fallbackOver) > 0 {
		d.log.Info("a host passes the health check again", "vips", fallbackOver)
	}
	var hosts []string
	for _, m := range v.Members {
		hosts = append(hosts, m.Name+"="+string(m.State))
		if m.Err != "" {
			d.log.Error("member not trusted with clients", "member", m.Name, "error", m.Err)
		}
	}
	d.log.Info("cluster view changed", "members", strings.Join(hosts, " "))
	for _, r := range d.responderSnapshot() {
		r.SetView(v)
	}
	d.handover.Update(v) // before re-pointing: a moved client's flows must be handed over at once
	d.repointer.ViewChanged(v)
	d.notify("STATUS=" + d.statusLine())
}

func (d *Daemon) meta() gossip.Meta {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.cfg.Meta(d.drained || d.stopping, d.healthy)
	for _, mac := range d.macs {
		m.MACs = append(m.MACs, mac.String())
	}
	slices.Sort(m.MACs)
	return m
}

func (d *Daemon) interfaceOpened(iface string, mac net.HardwareAddr) error {
	if err := quietARP(iface); err != nil {
		return err
	}
	return d.interfaceOpened6(iface, mac)
}

// interfaceOpened6 is interfaceOpened for NDP, which needs no sysctl: the
// kernel answers solicitations only for addresses on the interface they
// arrive on, and the VIP is on lo.
func (d *Daemon) interfaceOpened6(iface string, mac net.HardwareAddr) error {
	d.mu.Lock()
	changed := d.macs[iface].String() != mac.String()
	d.macs[iface] = mac
	d.mu.Unlock()
	if changed {
		if err := d.cluster.UpdateMeta(500 * time.Millisecond); err != nil {
			d.log.Debug("gossip new MAC", "interface", iface, "error", err)
		}
		d.notify("STATUS=" + d.statusLine())
	}
	return nil
}

// responderFor returns the responder serving vip.
func (d *Daemon) responderFor(vip netip.Addr) (*arp.Responder, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, v := range d.cfg.VIPs {
		if r, ok := d.responders[v.link()]; ok && v.Address == vip {
			return r.t, nil
		}
	}
	return nil, fmt.Errorf("VIP %s is no longer served", vip)
}

// sender sends re-pointing packets through the VIP's responder.
type sender struct{ d *Daemon }

func (s sender) Repoint(vip netip.Addr, c arp.Client) error { return s.d.repoint(vip, c) }
func (s sender) Announce(vip netip.Addr) error              { return s.d.announce(vip) }

func (d *Daemon) repoint(vip netip.Addr, c arp.Client) error {
	r, err := d.responderFor(vip)
	if err != nil {
		return err
	}
	return r.Repoint(vip, c)
}

func (d *Daemon) announce(vip netip.Addr) error {
	r, err := d.responderFor(vip)
	if err != nil {
		return err
	}
	return r.Announce(vip)
}

func (d *Daemon) healthChanged(h *healthCheck, healthy bool, err error) {
	v := h.vip
	d.mu.Lock()
	if c, ok := d.checks[v.Address]; !ok || c.t != h {
		d.mu.Unlock()
		return // a check replaced by a reload
	}
	d.healthy[v.Address] = healthy
	d.mu.Unlock()
	if healthy {
		d.log.Info("health check passes: serving", "vip", v.Name)
	} else {
		d.log.Warn("health check fails: handing clients to other hosts", "vip", v.Name, "error", err)
	}
	if err := d.cluster.UpdateMeta(500 * time.Millisecond); err != nil {
		d.log.Debug("gossip health", "vip", v.Name, "error", err)
	}
}

func (d *Daemon) drainedFile() string { return filepath.Join(d.config().Node.StateDir, "drained") }

// SetDrained drains this host (or resumes it). The state is written to disk
// first, so that it survives a restart. Draining returns once the other
// hosts have had the time to re-point this host's clients.
func (d *Daemon) SetDrained(ctx context.Context, drained bool) error {
	if drained {
		if err := os.MkdirAll(d.config().Node.StateDir, 0o755); err != nil {
			return fmt.Errorf("drain: %w", err)
		}
		if err := os.WriteFile(d.drainedFile(), []byte("drained by `arpshare drain`; `arpshare resume` undoes it\n"), 0o644); err != nil {
			return fmt.Errorf("drain: %w", err)
		}
	} else if err := os.Remove(d.drainedFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("resume: %w", err)
	}
	d.mu.Lock()
	changed := d.drained != drained
	d.drained = drained
	d.mu.Unlock()
	if !changed {
		return nil
	}
	if drained {
		d.log.Info("draining: other hosts take this host's clients")
	} else {
		d.log.Info("resuming: taking this host's clients back")
	}
	if err := d.cluster.UpdateMeta(drainWait); err != nil {
		d.log.Warn("gossip drain state", "error", err)
	}
	if drained {
		sleepCtx(ctx, drainWait)
	}
	return nil
}

// Status reports this host's view.
func (d *Daemon) Status() Status {
	v := d.cluster.View()
	d.mu.Lock()
	s := Status{
		Node: d.cfg.Node.Name, Version: d.version, Draining: d.drained || d.stopping, Members: memberStatuses(v.Members),
		Quorum: v.Quorum(), Expect: v.Expect, Join: v.JoinState(), JoinCause: v.Rejected,
		Repointing: d.repointer.Status(),
		Handover:   d.handover.Status(),
	}
	healthy := maps.Clone(d.healthy)
	cfg := d.cfg
	d.mu.Unlock()
	clients := d.table.Clients()
	responders := d.responderSnapshot()
	for _, vip := range cfg.VIPs {
		r := responders[vip.link()]
		vs := VIPStatus{
			Name: vip.Name, Address: vip.Address, Interface: vip.Interface, Mode: vip.Mode,
			Answering: r.MAC() != nil, Healthy: healthy[vip.Address], Fallback: v.Fallback(vip.Address),
			Owners: map[string]int{}, Frames: map[string]uint64{}, Eligible: []string{}, Unhealthy: []string{},
		}
		for _, c := range v.Eligible(vip.Address) {
			vs.Eligible = append(vs.Eligible, c.Name)
			vs.Owners[c.Name] = 0
		}
		for _, m := range v.Members {
			if m.Live() && slices.Contains(m.Meta.Unhealthy, vip.Address) {
				vs.Unhealthy = append(vs.Unhealthy, m.Name)
			}
		}
		for _, c := range clients {
			if c.VIP == vip.Address {
				vs.Clients++
				// Race mode has no single owner: count none.
				if o := vip.Policy().Owner(v, vip.Address, c.IP); o != "" && vip.Policy().Exclusive() {
					vs.Owners[o]++
				}
			}
		}
		for k, n := range r.Stats().Frames {
			if k.VIP == vip.Address {
				vs.Frames[string(k.Outcome)] = n
			}
		}
		s.VIPs = append(s.VIPs, vs)
	}
	s.Explain()
	return s
}

// sharedTable lets memberlist's push-pull carry the client table, so that a
// host that starts (or heals from a partition) knows the clients it must take.
type sharedTable struct {
	t   *arp.ClientTable
	log *slog.Logger
}

// maxChanges bounds the client-table changes one periodic exchange
// carries: a host takes part in about two exchanges every 30 s, so at most
// about 35 KB/s, whatever happens to the table (100,000 clients re-asking at
// once would be 1.7 MB an exchange). Changes that do not fit go in the next
// exchanges. A joining host gets the whole table regardless.
const maxChanges = 512 << 10

func (s sharedTable) LocalState(since time.Time) []byte {
	if since.IsZero() {
		return s.t.Encode(time.Now(), since)
	}
	return s.t.EncodeAtMost(time.Now(), since, maxChanges)
}

func (s sharedTable) MergeState(b []byte, join bool) {
	merge := s.t.MergeChanges
	if join {
		merge = s.t.Merge
	}
	if _, err := merge(b, time.Now()); err != nil {
		s.log.Warn("client table from a peer dropped", "error", err)
	}
}

// findVIP finds a VIP by name or address.
func (cfg *Config) findVIP(nameOrAddr string) (VIP, bool) {
	for _, v := range cfg.VIPs {
		if v.Name == nameOrAddr || v.Address.String() == nameOrAddr {
			return v, true
		}
	}
	return VIP{}, false
}

// Clients lists the known clients of vip (a name or address; empty: all),
// each with the host that answers it.
func (d *Daemon) Clients(vip string) ([]ClientStatus, error) {
	cfg := d.config()
	var only netip.Addr
	if vip != "" {
		v, ok := cfg.findVIP(vip)
		if !ok {
			return nil, fmt.Errorf("no VIP %q here", vip)
		}
		only = v.Address
	}
	names := map[netip.Addr]VIP{}
	for _, v := range cfg.VIPs {
		names[v.Address] = v
	}
	view := d.cluster.View()
	out := []ClientStatus{}
	for _, c := range d.table.Clients() {
		v, ok := names[c.VIP]
		if !ok || (only.IsValid() && c.VIP != only) {
			continue
		}
		cs := ClientStatus{VIP: v.Name, IP: c.IP, MAC: c.MAC.String(), LastSeen: c.LastSeen}
		if p := v.Policy(); p.Exclusive() {
			cs.Owner = p.Owner(view, c.VIP, c.IP)
		}
		out = append(out, cs)
	}
	slices.SortFunc(out, func(a, b ClientStatus) int {
		if a.VIP != b.VIP {
			return strings.Compare(a.VIP, b.VIP)
		}
		return a.IP.Compare(b.IP)
	})
	return out, nil
}

// Owner says which host answers client for vip (a name or address), from
// this host's live view: the first question when a user complains.
func (d *Daemon) Owner(vip, client string) (OwnerStatus, error) {
	v, ok := d.config().findVIP(vip)
	if !ok {
		return OwnerStatus{}, fmt.Errorf("no VIP %q here", vip)
	}
	ip, err := netip.ParseAddr(client)
	if err != nil {
		return OwnerStatus{}, fmt.Errorf("client %q is not an IP address", client)
	}
	view := d.cluster.View()
	o := OwnerStatus{VIP: v.Name, Address: v.Address, Mode: v.Mode, Client: ip,
		Owner: v.Policy().Owner(view, v.Address, ip), Eligible: []string{}, Quorum: view.Quorum()}
	for _, c := range view.Eligible(v.Address) {
		o.Eligible = append(o.Eligible, c.Name)
	}
	if c, ok := d.table.Get(v.Address, ip); ok {
		o.Known, o.MAC = true, c.MAC.String()
	}
	return o, nil
}
