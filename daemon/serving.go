package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/arpshare/arpshare/arp"
)

// apply makes the VIPs of cfg served, starting from those of old (nil at
// start): VIPs on lo, a responder per interface, a health check per VIP.
// Unchanged VIPs keep their responder, check and health, so their clients
// notice nothing. Only an error at start is returned; on reload, a VIP that
// cannot be plumbed is logged and the rest applied.
func (d *Daemon) apply(old, cfg *Config) error {
	oldVIPs := map[netip.Addr]VIP{}
	if old != nil {
		for _, v := range old.VIPs {
			oldVIPs[v.Address] = v
		}
	}
	newVIPs := map[netip.Addr]VIP{}
	for _, v := range cfg.VIPs {
		newVIPs[v.Address] = v
		if _, ok := oldVIPs[v.Address]; ok {
			continue
		}
		if err := addVIP(v.Address); err != nil {
			if old == nil {
				return fmt.Errorf("vip %q: %w", v.Name, err)
			}
			d.log.Error("reload: cannot add VIP", "vip", v.Name, "error", err)
		}
	}
	for addr, v := range oldVIPs {
		if _, ok := newVIPs[addr]; !ok {
			if err := removeVIP(addr); err != nil {
				d.log.Error("reload: cannot remove VIP", "vip", v.Name, "error", err)
			}
			d.table.Forget(addr)
		}
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	d.cfg = cfg

	// Health checks: keep the unchanged ones, with their state.
	for addr, c := range d.checks {
		if v, ok := newVIPs[addr]; !ok || !reflect.DeepEqual(v.Check, oldVIPs[addr].Check) {
			c.cancel()
			delete(d.checks, addr)
			delete(d.healthy, addr)
		}
	}
	for addr, v := range newVIPs {
		if _, ok := d.checks[addr]; ok {
			continue
		}
		if v.Check == nil {
			d.healthy[addr] = true
			continue
		}
		d.healthy[addr] = false
		var h *healthCheck
		h = newHealthCheck(v, func(ok bool, err error) { d.healthChanged(h, ok, err) })
		d.checks[addr] = start(d, h)
	}
	for addr := range d.healthy {
		if _, ok := newVIPs[addr]; !ok {
			delete(d.healthy, addr)
		}
	}

	// Responders: one per interface and address family that serves at
	// least one VIP.
	byLink := map[linkKey][]arp.VIP{}
	for _, v := range cfg.VIPs {
		byLink[v.link()] = append(byLink[v.link()], arp.VIP{Address: v.Address, Policy: v.Policy()})
	}
	for k, r := range d.responders {
		if vips, ok := byLink[k]; ok {
			r.t.SetVIPs(vips)
			continue
		}
		r.cancel()
		delete(d.responders, k)
	}
	for k, vips := range byLink {
		if _, ok := d.responders[k]; ok {
			continue
		}
		onOpen := d.interfaceOpened
		if k.ipv6 {
			onOpen = d.interfaceOpened6
		}
		d.responders[k] = start(d, arp.NewResponder(arp.ResponderConfig{
			Interface: k.iface, IPv6: k.ipv6, VIPs: vips, Table: d.table, View: d.cluster.View(),
			Logger: d.log, OnOpen: onOpen,
		}))
	}
	for iface := range d.macs {
		if _, v4 := byLink[linkKey{iface, false}]; !v4 {
			if _, v6 := byLink[linkKey{iface, true}]; !v6 {
				delete(d.macs, iface)
			}
		}
	}
	return nil
}

// start runs t until it is cancelled or the daemon stops. Call with d.mu held.
func start[T task](d *Daemon, t T) *running[T] {
	ctx, cancel := context.WithCancel(d.dynamic)
	r := &running[T]{t: t, cancel: cancel, done: make(chan struct{})}
	d.dynWG.Go(func() {
		defer close(r.done)
		if err := t.Run(ctx); err != nil {
			d.log.Error("task failed", "task", t.String(), "error", err)
		}
	})
	return r
}

// stopAll ends every responder and check and waits for them.
func (d *Daemon) stopAll() {
	d.mu.Lock()
	for _, r := range d.responders {
		r.cancel()
	}
	for _, c := range d.checks {
		c.cancel()
	}
	d.mu.Unlock()
	d.dynWG.Wait()
}

// Reload reads the config at path again and applies it. A config that does
// not pass `arpshare check` is refused and the running one stays in force.
// VIPs and node.weight change live; other settings need a restart, and the
// log says which.
func (d *Daemon) Reload(path string) error {
	cfg, err := LoadConfig(path)
	if err != nil {
		d.reloads.WithLabelValues("refused").Inc()
		d.lastReload.Set(0)
		return fmt.Errorf("config refused, the running one stays in force: %w", err)
	}
	old := d.config()
	var needRestart []string
	if !reflect.DeepEqual(cfg.Gossip, old.Gossip) {
		needRestart = append(needRestart, "[gossip]")
	}
	if cfg.API != old.API {
		needRestart = append(needRestart, "[api]")
	}
	if cfg.Handover != old.Handover {
		needRestart = append(needRestart, "[handover]")
	}
	if cfg.Node.Name != old.Node.Name || cfg.Node.StateDir != old.Node.StateDir || cfg.Node.MaxClients != old.Node.MaxClients ||
		cfg.Node.RepointRate != old.Node.RepointRate || cfg.Node.ReassertInterval != old.Node.ReassertInterval {
		needRestart = append(needRestart, "[node] name/state_dir/max_clients/repoint_rate/reassert_interval")
	}
	if len(needRestart) > 0 {
		d.log.Warn("reload: these settings changed but only apply at restart", "settings", strings.Join(needRestart, ", "))
	}
	applied := *cfg
	applied.Gossip, applied.API, applied.Handover = old.Gossip, old.API, old.Handover
	applied.Node.Name, applied.Node.StateDir, applied.Node.MaxClients = old.Node.Name, old.Node.StateDir, old.Node.MaxClients
	applied.Node.RepointRate, applied.Node.ReassertInterval = old.Node.RepointRate, old.Node.ReassertInterval

	if err := d.apply(old, &applied); err != nil {
		d.reloads.WithLabelValues("refused").Inc()
		d.lastReload.Set(0)
		return err
	}
	d.reloads.WithLabelValues("applied").Inc()
	d.lastReload.Set(1)
	if err := d.cluster.UpdateMeta(500 * time.Millisecond); err != nil {
		d.log.Debug("gossip reloaded config", "error", err)
	}
	d.handover.Update(nil)
	d.repointer.ViewChanged(d.cluster.View())
	var names []string
	for _, v := range applied.VIPs {
		names = append(names, v.Name)
	}
	d.log.Info("config reloaded", "vips", names, "weight", applied.Node.Weight)
	return nil
}

// reloader reloads the config on SIGHUP, telling systemd as its
// notify-reload protocol asks.
type reloader struct {
	d    *Daemon
	path string
}

func (r *reloader) String() string { return "reloader" }

func (r *reloader) Run(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
		}
		var ts unix.Timespec
		unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
		r.d.notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000))
		status := ""
		if err := r.d.Reload(r.path); err != nil {
			r.d.log.Error("reload", "error", err)
			// `systemctl status` shows it until the next status change.
			first, _, _ := strings.Cut(err.Error(), "\n")
			status = "last reload refused (" + first + "); "
		}
		r.d.notify("READY=1\nSTATUS=" + status + r.d.statusLine())
	}
}

// watchdog pings systemd's watchdog (WatchdogSec=) while the loops that do
// the work still turn: the gossip loop and the re-pointing loop. If either
// hangs, the pings stop and systemd restarts the daemon.
type watchdog struct{ d *Daemon }

func (w *watchdog) String() string { return "watchdog" }

func (w *watchdog) Run(ctx context.Context) error {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(interval / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			beats := []time.Time{w.d.cluster.Heartbeat(), w.d.repointer.Heartbeat()}
			if slices.ContainsFunc(beats, func(b time.Time) bool { return now.Sub(b) > interval/2 }) {
				w.d.log.Error("a main loop is stuck: not pinging the systemd watchdog", "gossip", beats[0], "repointer", beats[1])
				continue
			}
			w.d.notify("WATCHDOG=1")
		}
	}
}

// waitingFor lists the serving interfaces never opened yet, as "eth0 (vip
// web)".
func (d *Daemon) waitingFor() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, iface := range d.cfg.Interfaces() {
		if _, ok := d.macs[iface]; ok {
			continue
		}
		var names []string
		for _, v := range d.cfg.VIPs {
			if v.Interface == iface {
				names = append(names, v.Name)
			}
		}
		out = append(out, fmt.Sprintf("%s (vip %s)", iface, strings.Join(names, ", ")))
	}
	return out
}
