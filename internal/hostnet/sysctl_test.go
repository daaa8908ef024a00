package hostnet

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arpshare/arpshare/internal/config"
)

// TestSysctlGuard: an ARP sysctl of a serving interface that something
// else changed is put back and counted; right ones, IPv6-only interfaces
// and missing interfaces are left alone.
func TestSysctlGuard(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	set := func(iface, key, value string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(dir, iface), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, iface, key), []byte(value+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	get := func(iface, key string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, iface, key))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	set("eth0", "arp_ignore", "1")
	set("eth0", "arp_announce", "2")
	set("eth1", "arp_ignore", "0") // IPv6 VIPs only: none of arpshare's business
	set("eth1", "arp_announce", "0")
	cfg := &config.Config{VIPs: []config.VIP{
		{Name: "web", Address: netip.MustParseAddr("198.18.0.200"), Interface: "eth0"},
		{Name: "db", Address: netip.MustParseAddr("198.18.0.201"), Interface: "eth0"},
		{Name: "web6", Address: netip.MustParseAddr("fd00::200"), Interface: "eth1"},
		{Name: "later", Address: netip.MustParseAddr("198.18.0.202"), Interface: "eth9"}, // missing
	}}
	g := NewSysctlGuard(dir, staticConfig{cfg}, slog.New(slog.DiscardHandler))
	if n := g.check(); n != 0 {
		t.Fatalf("put back %d sysctls that were right", n)
	}
	set("eth0", "arp_ignore", "0") // sysctl --system
	if n := g.check(); n != 1 {
		t.Errorf("put back %d sysctls, want 1", n)
	}
	if got := get("eth0", "arp_ignore"); got != "1" {
		t.Errorf("eth0 arp_ignore = %q after the check, want 1", got)
	}
	if got := restoredCount(t, g, "eth0", "arp_ignore"); got != 1 {
		t.Errorf("%s{eth0,arp_ignore} = %v, want 1", MetricSysctlRestored, got)
	}
	if got := restoredCount(t, g, "eth0", "arp_announce"); got != 0 {
		t.Errorf("%s{eth0,arp_announce} = %v, want 0", MetricSysctlRestored, got)
	}
	if got := get("eth1", "arp_ignore"); got != "0\n" {
		t.Errorf("eth1 (IPv6 only) arp_ignore = %q, want it untouched", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "eth9")); !os.IsNotExist(err) {
		t.Errorf("the guard made a missing interface's sysctls: %v", err)
	}
	if n := g.check(); n != 0 {
		t.Errorf("a second check put back %d sysctls, want 0", n)
	}
}

func restoredCount(t *testing.T, g *SysctlGuard, iface, key string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(g.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if mf.GetName() == MetricSysctlRestored && labels["interface"] == iface && labels["sysctl"] == key {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// staticConfig is a config in force that never changes.
type staticConfig struct{ cfg *config.Config }

func (s staticConfig) Config() *config.Config { return s.cfg }
