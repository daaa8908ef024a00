package hostnet

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arpshare/arpshare/internal/config"
)

// MetricSysctlRestored counts the ARP sysctls of serving interfaces found
// changed (by `sysctl --system`, a configuration tool, an operator) and put
// back, by interface and sysctl.
const MetricSysctlRestored = "arpshare_sysctl_restored_total"

// ProcNetConf is where the kernel keeps the IPv4 sysctls of each interface.
const ProcNetConf = "/proc/sys/net/ipv4/conf"

// sysctlEvery is how often the guard looks at the sysctls. Nothing tells
// the daemon that one changed (the kernel sends no netlink event for
// arp_ignore or arp_announce, and inotify does not work on /proc/sys), and
// meanwhile the kernel answers every client's request for the VIP along
// with the owner: a few seconds of that is the price of reading four small
// files per interface.
const sysctlEvery = 5 * time.Second

// arpSysctls are the values each interface serving an IPv4 VIP needs (see
// Host).
var arpSysctls = []struct{ key, value string }{{"arp_ignore", "1"}, {"arp_announce", "2"}}

// sysctlGuard puts back the ARP sysctls of the serving interfaces whenever
// something else changed them.
type SysctlGuard struct {
	dir      string // ProcNetConf; "" plumbs nothing (tests)
	cfg      ConfigSource
	log      *slog.Logger
	restored *prometheus.CounterVec
	failed   map[string]string // the last error of each interface and sysctl, logged once
}

func NewSysctlGuard(dir string, cfg ConfigSource, log *slog.Logger) *SysctlGuard {
	return &SysctlGuard{dir: dir, cfg: cfg, log: log, failed: map[string]string{},
		restored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricSysctlRestored,
			Help: "ARP sysctls (arp_ignore, arp_announce) of a serving interface found changed by something else and put back, by interface and sysctl.",
		}, []string{"interface", "sysctl"})}
}

// ConfigSource gives the config in force.
type ConfigSource interface{ Config() *config.Config }

// Collector counts the sysctls put back.
func (g *SysctlGuard) Collector() prometheus.Collector { return g.restored }

func (g *SysctlGuard) String() string { return "sysctl guard" }

// Run checks the sysctls every sysctlEvery until ctx ends.
func (g *SysctlGuard) Run(ctx context.Context) error {
	if g.dir == "" {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(sysctlEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			g.check()
		}
	}
}

// interfaces are those of the IPv4 VIPs in force, each once.
func (g *SysctlGuard) interfaces() []string {
	var out []string
	for _, v := range g.cfg.Config().VIPs {
		if v.Address.Is4() && !slices.Contains(out, v.Interface) {
			out = append(out, v.Interface)
		}
	}
	return out
}

// check puts back every ARP sysctl of a serving interface that differs
// from what it needs, and returns how many it put back. An interface that
// does not exist (yet) is skipped: the responder sets them as it opens.
func (g *SysctlGuard) check() int {
	n := 0
	for _, iface := range g.interfaces() {
		for _, s := range arpSysctls {
			p := filepath.Join(g.dir, iface, s.key)
			b, err := os.ReadFile(p)
			if errors.Is(err, fs.ErrNotExist) {
				break
			}
			was := strings.TrimSpace(string(b))
			if err == nil && was == s.value {
				delete(g.failed, p)
				continue
			}
			if err == nil {
				err = os.WriteFile(p, []byte(s.value), 0o644)
			}
			if err != nil {
				if msg := err.Error(); g.failed[p] != msg {
					g.failed[p] = msg
					g.log.Error("cannot keep the kernel from answering ARP for the VIPs", "interface", iface, "sysctl", s.key, "error", fmt.Errorf("interface %s: %s: %w", iface, s.key, err))
				}
				continue
			}
			delete(g.failed, p)
			g.restored.WithLabelValues(iface, s.key).Inc()
			g.log.Warn("ARP sysctl changed by something else (sysctl --system, a configuration tool?): put back, or the kernel answers ARP for the VIPs",
				"interface", iface, "sysctl", s.key, "was", was, "now", s.value)
			n++
		}
	}
	return n
}
