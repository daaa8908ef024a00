package lab

import (
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/arpshare/arpshare/internal/api"
	"github.com/arpshare/arpshare/internal/metrics"
)

// metric returns the value of the sample of name whose labels include all
// of want, or -1.
func metric(t *testing.T, page, name string, want map[string]string) float64 {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(page))
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	f, ok := families[name]
	if !ok {
		return -1
	}
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			match = match && labels[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

// TestOperations covers what an operator touches: metrics that move with the
// traffic, `arpshare clients` and `arpshare owner`, and live reload.
func TestOperations(t *testing.T) {
	requirePrivileged(t)
	l := newLab(t, 3, 10, HostConfig{Metrics: true, Expect: 3})
	l.Hosts[0].Journal = true
	startAll(t, l.Hosts)
	h1 := l.Hosts[0]
	base := assignment(t, l.Clients)
	mine := count(base)["h1"]
	vip := map[string]string{"vip": "web"}

	t.Run("metrics", func(t *testing.T) {
		// The client counts are recounted at most once a second while the
		// table keeps changing (ownerCountsAge): the first scrape may
		// predate the last clients' arrival.
		var page string
		for deadline := time.Now().Add(5 * time.Second); ; {
			var err error
			if page, err = h1.Scrape(); err != nil {
				t.Fatal(err)
			}
			if metric(t, page, metrics.MetricClientsKnown, vip) == 10 || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		for name, want := range map[string]float64{
			metrics.MetricClientsKnown: 10,
			metrics.MetricClientsOwned: float64(mine),
		} {
			if got := metric(t, page, name, vip); got != want {
				t.Errorf("%s = %v, want %v", name, got, want)
			}
		}
		if got := metric(t, page, metrics.MetricMembers, map[string]string{"state": "alive"}); got != 3 {
			t.Errorf("alive members = %v, want 3", got)
		}
		for _, name := range []string{metrics.MetricBuildInfo, metrics.MetricQuorum, metrics.MetricHealthScore, metrics.MetricLastViewChange, "go_goroutines"} {
			if metric(t, page, name, nil) < 0 {
				t.Errorf("%s missing", name)
			}
		}
		for name, want := range map[string]float64{metrics.MetricEligibleHosts: 3, metrics.MetricVIPEligible: 1, metrics.MetricVIPServing: 1, metrics.MetricVIPHealthy: 1} {
			if got := metric(t, page, name, vip); got != want {
				t.Errorf("%s{vip=\"web\"} = %v, want %v", name, got, want)
			}
		}
		if got := metric(t, page, metrics.MetricNodeInfo, map[string]string{"node": "h1"}); got != 1 {
			t.Errorf("%s{node=\"h1\"} = %v, want 1", metrics.MetricNodeInfo, got)
		}
		answered := metric(t, page, metrics.MetricFramesReceived, map[string]string{"vip": "web", "protocol": "arp", "outcome": "answered"})
		notOwner := metric(t, page, metrics.MetricFramesReceived, map[string]string{"vip": "web", "protocol": "arp", "outcome": "not_owner"})
		replies := metric(t, page, metrics.MetricRepliesSent, vip)

		// Every client asks afresh: h1 answers its own and hears the rest.
		for _, c := range l.Clients {
			if err := c.ForgetVIP(); err != nil {
				t.Fatal(err)
			}
		}
		assignment(t, l.Clients)
		page, err := h1.Scrape()
		if err != nil {
			t.Fatal(err)
		}
		if got := metric(t, page, metrics.MetricFramesReceived, map[string]string{"vip": "web", "protocol": "arp", "outcome": "answered"}); got < answered+float64(mine) {
			t.Errorf("answered went from %v to %v, want at least +%d", answered, got, mine)
		}
		if got := metric(t, page, metrics.MetricFramesReceived, map[string]string{"vip": "web", "protocol": "arp", "outcome": "not_owner"}); got < notOwner+float64(10-mine) {
			t.Errorf("not_owner went from %v to %v, want at least +%d", notOwner, got, 10-mine)
		}
		if got := metric(t, page, metrics.MetricRepliesSent, vip); got < replies+float64(mine) {
			t.Errorf("replies went from %v to %v, want at least +%d", replies, got, mine)
		}
	})

	t.Run("clients and owner", func(t *testing.T) {
		// The VIP as an argument, a flag after it.
		out, err := l.Hosts[1].Run("clients", "web", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var cs []api.ClientStatus
		if err := json.Unmarshal([]byte(out), &cs); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if len(cs) != len(l.Clients) {
			t.Errorf("h2 lists %d clients, want %d", len(cs), len(l.Clients))
		}
		byIP := map[string]string{}
		for _, c := range cs {
			byIP[c.IP.String()] = c.Owner
		}
		for _, c := range l.Clients {
			if byIP[c.Addr.String()] != base[c.Name] {
				t.Errorf("arpshare clients: %s owned by %q, but served by %s", c.Addr, byIP[c.Addr.String()], base[c.Name])
			}
			out, err := l.Hosts[2].Run("owner", "web", c.Addr.String())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, ": "+base[c.Name]+"\n") {
				t.Errorf("arpshare owner web %s said %q, want %s", c.Addr, out, base[c.Name])
			}
		}
		// An unknown VIP is refused with the list of those that exist.
		if _, err := h1.Run("owner", "nosuch", "198.18.0.101"); err == nil || !strings.Contains(err.Error(), `no VIP "nosuch" here; VIPs: web (`+VIP.String()+`)`) {
			t.Errorf("owner of an unknown VIP: %v", err)
		}
		// --vip, as older releases took it for clients, names the same VIP.
		if out, err := h1.Run("owner", l.Clients[0].Addr.String(), "--vip", VIP.String(), "--json"); err != nil || !strings.Contains(out, `"owner": "`+base[l.Clients[0].Name]+`"`) {
			t.Errorf("owner --vip %s %s --json: %v\n%s", VIP, l.Clients[0].Addr, err, out)
		}
	})

	t.Run("reload", func(t *testing.T) {
		probe := StartProbe(l.Clients, VIP, 50*time.Millisecond, probeTimeout)
		for _, h := range l.Hosts {
			if err := h.WriteConfig(HostConfig{Metrics: true, Expect: 3, SecondVIP: true}); err != nil {
				t.Fatal(err)
			}
			if err := h.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		}
		for _, h := range l.Hosts {
			waitLog(t, h, "config reloaded", 5*time.Second)
		}
		// The new VIP is served, by all hosts, with no restart.
		deadline := time.Now().Add(10 * time.Second)
		served := map[string]bool{}
		for _, c := range l.Clients {
			for {
				h, err := c.DialVIP(SecondVIP, 300*time.Millisecond)
				if err == nil {
					served[h] = true
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("client %s never reached the new VIP: %v", c.Name, err)
				}
			}
		}
		if len(served) < 2 {
			t.Errorf("new VIP served by %v only", served)
		}

		// A broken config is refused; everything keeps working. The unit's
		// ExecReload= runs `arpshare check --offline` first, which fails.
		if err := h1.WriteConfig(HostConfig{Broken: true}); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(l.binary, "check", "--offline", "--config", h1.Config).CombinedOutput(); err == nil {
			t.Errorf("arpshare check --offline passes a broken config: %s", out)
		}
		if err := h1.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitLog(t, h1, "config refused, the running one stays in force", 5*time.Second)
		page, err := h1.Scrape()
		if err != nil {
			t.Fatal(err)
		}
		if got := metric(t, page, metrics.MetricConfigReloads, map[string]string{"result": "refused"}); got != 1 {
			t.Errorf("refused reloads = %v, want 1", got)
		}
		if got := metric(t, page, metrics.MetricConfigLastLoad, nil); got != 0 {
			t.Errorf("%s = %v after a refused reload, want 0", metrics.MetricConfigLastLoad, got)
		}
		if !slices.ContainsFunc(h1.Notes(), func(n string) bool { return strings.HasPrefix(n, "STATUS=last reload refused (") }) {
			t.Errorf("h1 did not tell systemd that the reload was refused: %q", h1.Notes())
		}
		// h1 logs to the "journal": every line carries its syslog
		// priority, the refusal an error's.
		journalPriorities(t, h1, map[string]string{
			"config refused, the running one stays in force": "<3>",
			"arpshare ready": "<6>",
		})

		// Removing the VIP takes it off lo.
		if err := h1.WriteConfig(HostConfig{Metrics: true, Expect: 3}); err != nil {
			t.Fatal(err)
		}
		if err := h1.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline = time.Now().Add(5 * time.Second)
		for {
			out, _ := ipOut("-n", h1.NS, "-o", "addr", "show", "dev", "lo")
			if !strings.Contains(out, SecondVIP.String()) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still has the removed VIP on lo", h1.Name)
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond)
		samples := probe.Stop()
		if f, _ := failures(samples); len(f) > 0 {
			t.Errorf("the web VIP's clients saw %d failures during reloads: %v", len(f), f)
		}
		for c, ss := range samples {
			for _, s := range ss {
				if s.Host != base[c] {
					t.Errorf("client %s of web moved to %q during reloads", c, s.Host)
					break
				}
			}
		}
		for _, h := range l.Hosts {
			notes := strings.Join(h.Notes(), "\n")
			if !strings.Contains(notes, "RELOADING=1\nMONOTONIC_USEC=") {
				t.Errorf("%s did not tell systemd it reloads: %q", h.Name, notes)
			}
		}
	})
}

// journalPriorities checks that every line h logged starts with a syslog
// priority that matches its level, and that the lines holding each key of
// want start with its value.
func journalPriorities(t *testing.T, h *Host, want map[string]string) {
	t.Helper()
	b, err := os.ReadFile(h.Log)
	if err != nil {
		t.Fatal(err)
	}
	levels := map[string]string{"<3>": "level=ERROR", "<4>": "level=WARN", "<6>": "level=INFO", "<7>": "level=DEBUG"}
	found := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if len(line) < 3 || levels[line[:3]] == "" || !strings.HasPrefix(line[3:], levels[line[:3]]) {
			t.Errorf("%s logged without a matching syslog priority: %q", h.Name, line)
			continue
		}
		for text, prio := range want {
			if strings.Contains(line, text) {
				found[text] = true
				if line[:3] != prio {
					t.Errorf("%s logged %q at %s, want %s", h.Name, line, line[:3], prio)
				}
			}
		}
	}
	for text := range want {
		if !found[text] {
			t.Errorf("%s never logged %q", h.Name, text)
		}
	}
}
