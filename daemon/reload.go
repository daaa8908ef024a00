package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arpshare/arpshare/internal/config"
)

// errRefused is a reload that applied nothing.
var errRefused = errors.New("config refused, the running one stays in force")

// Reload reads the config at path again and applies it. A config that does
// not pass `arpshare check` is refused and the running one stays in force.
// VIPs, node.weight, gossip.peers and gossip.expect change live; other
// settings need a restart, and the log says which. A VIP that cannot be plumbed is left out, the others
// applied, and the error returned.
func (d *Daemon) Reload(path string) error {
	cfg, err := config.LoadConfig(path)
	if err != nil {
		d.reloads.WithLabelValues("refused").Inc()
		d.lastReload.Set(0)
		return fmt.Errorf("%w: %w", errRefused, err)
	}
	old := d.config()
	applied := liveChanges(d.log, old, cfg)
	applyErr := d.serving.apply(old, applied)
	if applyErr != nil {
		d.reloads.WithLabelValues("failed").Inc()
		d.lastReload.Set(0)
	} else {
		d.reloads.WithLabelValues("applied").Inc()
		d.lastReload.Set(1)
	}
	if g := applied.Gossip; !slices.Equal(g.Peers, old.Gossip.Peers) || g.Expect != old.Gossip.Expect {
		d.log.Info("gossip peers reloaded: joining the new ones; quorum counts the hosts now named", "peers", len(g.Peers), "expect", g.Expect)
		d.cluster.SetPeers(g.Peers, g.Expect)
	}
	if err := d.cluster.UpdateMeta(500 * time.Millisecond); err != nil {
		d.log.Debug("gossip reloaded config", "error", err)
	}
	d.handover.Update(nil)
	d.spread.Update(nil)
	d.propose.Update()
	d.repointer.ViewChanged(d.cluster.View())
	var names []string
	for _, v := range d.config().VIPs {
		names = append(names, v.Name)
	}
	d.log.Info("config reloaded", "vips", names, "weight", applied.Node.Weight)
	return applyErr
}

// liveChanges returns cfg with the settings that only apply at restart
// kept as in old, and logs those that changed.
func liveChanges(log *slog.Logger, old, cfg *config.Config) *config.Config {
	var needRestart []string
	restartOnly := cfg.Gossip
	restartOnly.Peers, restartOnly.Expect = old.Gossip.Peers, old.Gossip.Expect // these apply live
	if !reflect.DeepEqual(restartOnly, old.Gossip) {
		needRestart = append(needRestart, "[gossip] bind/key_file/cluster/insecure/timings")
	}
	if cfg.API != old.API {
		needRestart = append(needRestart, "[api]")
	}
	if cfg.Handover != old.Handover {
		needRestart = append(needRestart, "[handover]")
	}
	if cfg.Node.Name != old.Node.Name || cfg.Node.StateDir != old.Node.StateDir || cfg.Node.MaxClients != old.Node.MaxClients ||
		cfg.Node.RepointRate != old.Node.RepointRate || cfg.Node.ReassertInterval != old.Node.ReassertInterval ||
		cfg.Node.ReassertRate != old.Node.ReassertRate || cfg.Node.FastPath != old.Node.FastPath {
		needRestart = append(needRestart, "[node] name/state_dir/max_clients/repoint_rate/reassert_interval/reassert_rate/fast_path")
	}
	if len(needRestart) > 0 {
		log.Warn("reload: these settings changed but only apply at restart", "settings", strings.Join(needRestart, ", "))
	}
	applied := *cfg
	applied.Gossip, applied.API, applied.Handover = old.Gossip, old.API, old.Handover
	applied.Gossip.Peers, applied.Gossip.Expect = cfg.Gossip.Peers, cfg.Gossip.Expect
	applied.Node.Name, applied.Node.StateDir, applied.Node.MaxClients = old.Node.Name, old.Node.StateDir, old.Node.MaxClients
	applied.Node.RepointRate, applied.Node.ReassertInterval = old.Node.RepointRate, old.Node.ReassertInterval
	applied.Node.ReassertRate = old.Node.ReassertRate
	applied.Node.FastPath = old.Node.FastPath
	return &applied
}

// reloader reloads the config on SIGHUP, telling systemd as its
// notify-reload protocol asks.
type reloader struct {
	d      reloadable
	log    *slog.Logger
	notify func(state string)
	path   string
	ready  chan struct{} // closed once SIGHUP is caught: before, it kills
}

// reloadable is what the reloader reloads, and the status it then tells.
type reloadable interface {
	Reload(path string) error
	statusLine() string
}

func (d *Daemon) newReloader(path string) *reloader {
	return &reloader{d: d, log: d.log, notify: d.seams.notify, path: path, ready: make(chan struct{})}
}

func (r *reloader) String() string         { return "reloader" }
func (r *reloader) Ready() <-chan struct{} { return r.ready }

func (r *reloader) Run(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	close(r.ready)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
		}
		r.reload()
	}
}

func (r *reloader) reload() {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	r.notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", ts.Nano()/1000))
	status := ""
	if err := r.d.Reload(r.path); err != nil {
		r.log.Error("reload", "error", err)
		// `systemctl status` shows it until the next status change.
		first, _, _ := strings.Cut(err.Error(), "\n")
		what := "failed"
		if errors.Is(err, errRefused) {
			what = "refused"
		}
		status = "last reload " + what + " (" + first + "); "
	}
	r.notify("READY=1\nSTATUS=" + status + r.d.statusLine())
}
