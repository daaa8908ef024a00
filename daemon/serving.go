package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/gossip"
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
	tasks      *supervisor // set by Daemon.Run, before the first apply
}

// apply makes the VIPs of cfg served, starting from those of old (nil at
// start): VIPs on lo, a responder per interface, a health check per VIP.
// Unchanged VIPs keep their responder, check and health, so their clients
// notice nothing. It returns the VIPs that failed, one error each: at
// start that is fatal; on reload a VIP that cannot be added is left out and
// the rest applied.
func (d *vipServer) apply(old, cfg *Config) error {
	served, err := d.plumb(old, cfg)
	if err != nil && old == nil {
		return err
	}
	d.state.setConfig(served)
	d.checks.set(served.VIPs, d.state, d.startCheck)
	d.responders.set(served.VIPs, d.newResponder, func(r *arp.Responder) *running[*arp.Responder] { return start(d.tasks, r) })
	return err
}

// plumb puts the VIPs new in cfg on lo and takes those gone off. It returns
// cfg without the VIPs that could not be added, and the failures.
func (d *vipServer) plumb(old, cfg *Config) (*Config, error) {
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
			if err := d.seams.host.AddVIP(v.Address); err != nil {
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
			if err := d.seams.host.RemoveVIP(v.Address); err != nil {
				errs = append(errs, fmt.Errorf("vip %q: %w", v.Name, err))
			}
			d.table.Forget(v.Address)
		}
	}
	// Peers' client tables bring clients of the configured VIPs only.
	d.table.Serve(slices.Collect(maps.Keys(is)))
	return &served, errors.Join(errs...)
}

// removeVIPs takes every VIP off lo, as the daemon stops.
func (d *vipServer) removeVIPs() {
	for _, v := range d.state.config().VIPs {
		if err := d.seams.host.RemoveVIP(v.Address); err != nil {
			d.log.Error("remove VIP", "vip", v.Name, "error", err)
		}
	}
}

func (d *vipServer) newResponder(k linkKey, vips []arp.VIP) *arp.Responder {
	onOpen := d.interfaceOpened
	if k.ipv6 {
		onOpen = d.interfaceOpened6
	}
	return arp.NewResponder(arp.ResponderConfig{
		Interface: k.iface, IPv6: k.ipv6, VIPs: vips, Table: d.table, View: d.cluster.View(),
		Logger: d.log, OnOpen: onOpen, Listen: d.seams.listen, ListenNDP: d.seams.listenNDP,
		FastPath: d.state.config().Node.FastPath != FastPathOff, // fast path (issue 11)
	})
}

func (d *vipServer) startCheck(v VIP) *running[*healthCheck] {
	var h *healthCheck
	h = newHealthCheck(v, func(ok bool, err error) { d.healthChanged(h, ok, err) })
	return start(d.tasks, h)
}

func (d *vipServer) interfaceOpened(iface string, mac net.HardwareAddr) error {
	if err := d.seams.host.QuietARP(iface); err != nil {
		return err
	}
	return d.interfaceOpened6(iface, mac)
}

// interfaceOpened6 is interfaceOpened for NDP, which needs no sysctl: the
// kernel answers solicitations only for addresses on the interface they
// arrive on, and the VIP is on lo.
func (d *vipServer) interfaceOpened6(iface string, mac net.HardwareAddr) error {
	if d.state.setMAC(iface, mac) {
		if err := d.cluster.UpdateMeta(500 * time.Millisecond); err != nil {
			d.log.Debug("gossip new MAC", "interface", iface, "error", err)
		}
		d.seams.notify("STATUS=" + statusLine(d.cluster.View(), d.state, d.table))
	}
	return nil
}

func (d *vipServer) healthChanged(h *healthCheck, healthy bool, err error) {
	if !d.checks.report(h, healthy, d.state) {
		return // a check replaced by a reload
	}
	if healthy {
		d.log.Info("health check passes: serving", "vip", h.vip.Name)
	} else {
		d.log.Warn("health check fails: handing clients to other hosts", "vip", h.vip.Name, "error", err)
	}
	if err := d.cluster.UpdateMeta(500 * time.Millisecond); err != nil {
		d.log.Debug("gossip health", "vip", h.vip.Name, "error", err)
	}
}
