package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/config"
	"github.com/arpshare/arpshare/internal/health"
	"github.com/arpshare/arpshare/internal/linkwatch"
	"github.com/arpshare/arpshare/internal/task"
)

// vipServer serves the VIPs of the config in force: it puts them on lo,
// runs a responder per interface and family and a health check per VIP
// (under the daemon's supervisor), and tells gossip when what this host
// offers changes (a MAC, a VIP's health).
type vipServer struct {
	log        *slog.Logger
	seams      seams
	state      *hostState
	table      *arp.ClientTable
	cluster    *gossip.Cluster
	responders *responders
	checks     *checks
	links      *linkwatch.Watch
	tasks      *task.Supervisor // set by Daemon.Run, before the first apply
	// plumbing is held while the VIPs on lo change: by apply, and by the
	// link watch putting back a VIP someone took off.
	plumbing sync.Mutex
	// current is what is served, swapped whole by each apply.
	current atomic.Pointer[served]
}

// served is what this host serves: the config in force and the responder
// of each link it serves through, built whole by each apply and swapped at
// once, so that status, metrics and the registry's readers never see a
// reload's config with the responders of before it.
type served struct {
	cfg        *config.Config
	responders map[linkwatch.Key]*arp.Responder
}

// Served returns what is served: the config in force and its responders.
// Before the first apply it is the config given at start, with none.
func (s *vipServer) Served() (*config.Config, map[linkwatch.Key]*arp.Responder) {
	if cur := s.current.Load(); cur != nil {
		return cur.cfg, cur.responders
	}
	return s.state.Config(), map[linkwatch.Key]*arp.Responder{}
}

// watchLinks makes the link watch, which makes this host ineligible for
// a VIP whose link cannot serve it (package linkwatch).
func (s *vipServer) watchLinks(source linkwatch.Source) {
	s.links = linkwatch.New(s.log.With("component", "links"), source, s)
}

// Config is the config in force, for the link watch.
func (s *vipServer) Config() *config.Config { return s.state.Config() }

// SetLinkFaults records the link watch's faults.
func (s *vipServer) SetLinkFaults(f map[netip.Addr]string) { s.state.setLinkFaults(f) }

// Reopen reopens the responders of iface.
func (s *vipServer) Reopen(iface string) {
	for k, r := range s.responders.Snapshot() {
		if k.Iface == iface {
			r.Reopen()
		}
	}
}

// FaultsChanged gossips the link watch's faults.
func (s *vipServer) FaultsChanged() {
	if err := s.cluster.UpdateMeta(500 * time.Millisecond); err != nil {
		s.log.Debug("gossip link state", "error", err)
	}
	s.seams.notify("STATUS=" + statusLine(s.cluster.View(), s.state, s.table))
}

// apply makes the VIPs of cfg served, starting from those of old (nil at
// start): VIPs on lo, a responder per interface, a health check per VIP.
// Unchanged VIPs keep their responder, check and health, so their clients
// notice nothing. It returns the VIPs that failed, one error each: at
// start that is fatal; on reload a VIP that cannot be added is left out and
// the rest applied.
func (s *vipServer) apply(old, cfg *config.Config) error {
	s.plumbing.Lock()
	defer s.plumbing.Unlock()
	if old == nil {
		task.Start(s.tasks, s.links)
	}
	plumbed, err := s.plumb(old, cfg)
	if err != nil && old == nil {
		return err
	}
	s.state.setConfig(plumbed)
	s.links.Configured()
	s.checks.set(plumbed.VIPs, s.state, s.startCheck)
	s.responders.set(plumbed.VIPs, s.newResponder, func(r *arp.Responder) *task.Running[*arp.Responder] { return task.Start(s.tasks, r) })
	s.current.Store(&served{cfg: plumbed, responders: s.responders.Snapshot()})
	return err
}

// plumb puts the VIPs new in cfg on lo and takes those gone off. It returns
// cfg without the VIPs that could not be added, and the failures.
func (s *vipServer) plumb(old, cfg *config.Config) (*config.Config, error) {
	was, is := map[netip.Addr]bool{}, map[netip.Addr]bool{}
	if old != nil {
		for _, v := range old.VIPs {
			was[v.Address] = true
		}
	}
	var errs []error
	served := *cfg
	served.VIPs = nil
	for _, v := range cfg.VIPs {
		is[v.Address] = true
		if !was[v.Address] {
			if err := s.seams.host.AddVIP(v.Address); err != nil {
				errs = append(errs, fmt.Errorf("vip %q: %w", v.Name, err))
				continue
			}
		}
		served.VIPs = append(served.VIPs, v)
	}
	if old != nil {
		for _, v := range old.VIPs {
			if is[v.Address] {
				continue
			}
			if err := s.seams.host.RemoveVIP(v.Address); err != nil {
				errs = append(errs, fmt.Errorf("vip %q: %w", v.Name, err))
			}
			s.table.Forget(v.Address)
		}
	}
	// Peers' client tables bring clients of the configured VIPs only.
	s.table.Serve(slices.Collect(maps.Keys(is)))
	return &served, errors.Join(errs...)
}

// RestoreVIPs puts back on lo the VIPs in force that are missing from it
// (someone flushed lo's addresses), and returns those it could not put
// back. It lists lo under the plumbing lock, so a VIP that apply is adding
// or removing is not taken for lost.
func (s *vipServer) RestoreVIPs(list func() ([]netip.Addr, error)) (map[netip.Addr]error, error) {
	s.plumbing.Lock()
	defer s.plumbing.Unlock()
	onLo, err := list()
	if err != nil {
		return nil, err
	}
	failed := map[netip.Addr]error{}
	for _, v := range s.state.Config().VIPs {
		if slices.Contains(onLo, v.Address) {
			continue
		}
		if err := s.seams.host.AddVIP(v.Address); err != nil {
			failed[v.Address] = err
			continue
		}
		s.log.Warn("VIP was taken off lo: put it back", "vip", v.Name, "address", v.Address)
	}
	return failed, nil
}

// removeVIPs takes every VIP off lo, as the daemon stops.
func (s *vipServer) removeVIPs() {
	for _, v := range s.state.Config().VIPs {
		if err := s.seams.host.RemoveVIP(v.Address); err != nil {
			s.log.Error("remove VIP", "vip", v.Name, "error", err)
		}
	}
}

// newResponder makes the responder of k. It waits for the kernel to
// report its link able to carry answers before it opens it, and tells the
// link watch when its socket opens and when it fails.
func (s *vipServer) newResponder(k linkwatch.Key, vips []arp.SharedVIP) *arp.Responder {
	var r *arp.Responder
	plumb := s.interfaceOpened
	if k.IPv6 {
		plumb = s.interfaceOpened6
	}
	onOpen := func(iface string, mac net.HardwareAddr) error {
		if err := s.links.Usable(iface); err != nil {
			return err
		}
		if err := plumb(iface, mac); err != nil {
			if s.responders.current(k, r) {
				s.links.Closed(k, "plumbing failed: "+err.Error())
			}
			return err
		}
		if s.responders.current(k, r) {
			s.links.Opened(k)
		}
		return nil
	}
	onClose := func(_ string, err error) {
		if s.responders.current(k, r) {
			s.links.Closed(k, fmt.Sprintf("socket failed: %v", err))
		}
	}
	r = arp.NewResponder(arp.ResponderConfig{
		Interface: k.Iface, IPv6: k.IPv6, VIPs: vips, Table: s.table, View: s.cluster.View(),
		Logger: s.log, OnOpen: onOpen, OnClose: onClose, WaitLink: s.links.WaitLink, Listen: s.seams.listen, ListenNDP: s.seams.listenNDP,
		FastPath: s.state.Config().Node.FastPath != config.FastPathOff,
	})
	return r
}

func (s *vipServer) startCheck(v config.VIP) *task.Running[*health.Check] {
	var h *health.Check
	h = health.New(v, func(ok bool, err error) { s.healthChanged(h, ok, err) })
	return task.Start(s.tasks, h)
}

func (s *vipServer) interfaceOpened(iface string, mac net.HardwareAddr) error {
	if err := s.seams.host.QuietARP(iface); err != nil {
		return err
	}
	return s.interfaceOpened6(iface, mac)
}

// interfaceOpened6 is interfaceOpened for NDP, which needs no sysctl: the
// kernel answers solicitations only for addresses on the interface they
// arrive on, and the VIP is on lo.
func (s *vipServer) interfaceOpened6(iface string, mac net.HardwareAddr) error {
	if s.state.setMAC(iface, mac) {
		if err := s.cluster.UpdateMeta(500 * time.Millisecond); err != nil {
			s.log.Debug("gossip new MAC", "interface", iface, "error", err)
		}
		s.seams.notify("STATUS=" + statusLine(s.cluster.View(), s.state, s.table))
	}
	return nil
}

func (s *vipServer) healthChanged(h *health.Check, healthy bool, err error) {
	if !s.checks.report(h, healthy, s.state) {
		return // a check replaced by a reload
	}
	if healthy {
		s.log.Info("health check passes: serving", "vip", h.VIP().Name)
	} else {
		s.log.Warn("health check fails: handing clients to other hosts", "vip", h.VIP().Name, "error", err)
	}
	if err := s.cluster.UpdateMeta(500 * time.Millisecond); err != nil {
		s.log.Debug("gossip health", "vip", h.VIP().Name, "error", err)
	}
}
