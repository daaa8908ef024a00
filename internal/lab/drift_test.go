package lab

import (
	"encoding/json"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arpshare/arpshare/internal/hostnet"
)

// TestCheckOnRunningHost: `arpshare check` on a host whose daemon runs (the
// routine edit, check, reload) passes, and says that the gossip port is held
// by that daemon.
func TestCheckOnRunningHost(t *testing.T) {
	requirePrivileged(t)
	l := newLab(t, 2, 0, HostConfig{})
	startAll(t, l.Hosts)
	h := l.Hosts[0]
	cmd := exec.Command("ip", "netns", "exec", h.NS, l.binary, "check", "--config", h.Config)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("arpshare check on %s, whose daemon runs: %v\n%s", h.Name, err, out)
	}
	want := fmt.Sprintf("gossip.bind %s:7946: port 7946 is held by this host's running arpshare (pid %d, ", h.Addr, h.PID())
	if !strings.Contains(string(out), want) || !strings.Contains(string(out), h.Config+": ok") {
		t.Errorf("arpshare check says:\n%s\nwant %q and ok", out, want)
	}
	// --json lists it as a note.
	out, err = exec.Command("ip", "netns", "exec", h.NS, l.binary, "check", "--json", "--config", h.Config).Output()
	var res struct {
		OK     bool     `json:"ok"`
		Errors []string `json:"errors"`
		Notes  []string `json:"notes"`
	}
	if err != nil || json.Unmarshal(out, &res) != nil || !res.OK || len(res.Errors) != 0 ||
		!slices.ContainsFunc(res.Notes, func(n string) bool { return strings.HasPrefix(n, want) }) {
		t.Errorf("arpshare check --json: %v\n%s", err, out)
	}
	// Another host's config is not this daemon's: its bind is no address of
	// this host.
	if out, err := exec.Command("ip", "netns", "exec", h.NS, l.binary, "check", "--config", l.Hosts[1].Config).CombinedOutput(); err == nil {
		t.Errorf("check of h2's config on h1 passed:\n%s", out)
	}
}

// sysctl reads a sysctl in the host's namespace.
func (h *Host) sysctl(t *testing.T, key string) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", h.NS, "sysctl", "-n", key).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: sysctl %s: %v: %s", h.Name, key, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestSysctlReset: `sysctl -w net.ipv4.conf.eth0.arp_ignore=0` (as
// `sysctl --system` may do) on a serving host is put back within a few
// seconds and counted; afterwards the kernel answers no client's request
// for the VIP, and every client stays on its host.
func TestSysctlReset(t *testing.T) {
	requirePrivileged(t)
	// Without the fast path every request reaches the kernel's own ARP,
	// which answers for the VIP on lo unless arp_ignore says no.
	l := newLab(t, 2, 8, HostConfig{Metrics: true, FastPath: "off"})
	startAll(t, l.Hosts)
	before := assignment(t, l.Clients)
	h1 := l.Hosts[0]
	macs := map[string]string{}
	for _, h := range l.Hosts {
		mac, err := h.MAC()
		if err != nil {
			t.Fatal(err)
		}
		macs[h.Name] = mac
	}
	if c := count(before); c["h1"] == 0 || c["h2"] == 0 {
		t.Fatalf("assignment %v: both hosts need clients for the test to mean anything", before)
	}

	for _, kv := range []string{"net.ipv4.conf.eth0.arp_ignore=0", "net.ipv4.conf.eth0.arp_announce=0"} {
		if out, err := exec.Command("ip", "netns", "exec", h1.NS, "sysctl", "-q", "-w", kv).CombinedOutput(); err != nil {
			t.Fatalf("sysctl -w %s: %v: %s", kv, err, out)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for h1.sysctl(t, "net.ipv4.conf.eth0.arp_ignore") != "1" || h1.sysctl(t, "net.ipv4.conf.eth0.arp_announce") != "2" {
		if time.Now().After(deadline) {
			t.Fatal("arp_ignore and arp_announce of h1's eth0 not put back within 15 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	page, err := h1.Scrape()
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"arp_ignore", "arp_announce"} {
		if n := metric(t, page, hostnet.MetricSysctlRestored, map[string]string{"interface": "eth0", "sysctl": key}); n != 1 {
			t.Errorf("%s{interface=eth0,sysctl=%s} = %v, want 1", hostnet.MetricSysctlRestored, key, n)
		}
	}
	if lines, err := h1.LogSince(time.Time{}); err != nil || !slices.ContainsFunc(lines, func(l LogLine) bool {
		return strings.Contains(l.Text, "ARP sysctl changed by something else") && strings.Contains(l.Text, "sysctl=arp_ignore")
	}) {
		t.Errorf("no warning about the reset in h1's log (%v)", err)
	}

	// Only the owner answers each client: the kernel of h1 keeps quiet.
	for _, c := range l.Clients {
		got, err := c.ARPAnswers(VIP, 500*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{macs[before[c.Name]]}; !slices.Equal(got, want) {
			t.Errorf("client %s (of %s): answered by %v, want %v alone", c.Name, before[c.Name], got, want)
		}
		if err := c.ForgetVIP(); err != nil {
			t.Fatal(err)
		}
	}
	if after := assignment(t, l.Clients); !maps.Equal(before, after) {
		t.Errorf("clients moved after the reset: before %v, after %v", before, after)
	}
}

// TestReassertUnderDAI: a host owning 40 clients re-asserts them every 3 s
// (node.reassert_interval) at node.reassert_rate = 5: on the switch's side
// of its port, its re-pointing requests stay within 5 a second, as a port
// policed by dynamic ARP inspection needs, where today's once-a-round burst
// at repoint_rate sends them all at once.
func TestReassertUnderDAI(t *testing.T) {
	requirePrivileged(t)
	const clients, rate = 40, 5
	l := newLab(t, 1, clients, HostConfig{})
	h := l.Hosts[0]
	setNode(t, h, fmt.Sprintf("reassert_interval = \"3s\"\nreassert_rate = %d\n", rate))
	startAll(t, l.Hosts)
	assignment(t, l.Clients) // every client known, all h1's
	// Once the views have settled after the start (settleDelay, 2 s, after
	// the last change), h1 re-points its clients once more at repoint_rate:
	// that is failover's pace, not the periodic round's. Count from a
	// periodic round that starts after it.
	waitLog(t, h, "arpshare ready", 10*time.Second)
	var ready time.Time
	if lines, err := h.LogSince(time.Time{}); err == nil {
		for _, l := range lines {
			if strings.Contains(l.Text, "arpshare ready") {
				ready = l.At
			}
		}
	}
	periodicAfter := func(since time.Time) bool {
		lines, err := h.LogSince(since)
		return err == nil && slices.ContainsFunc(lines, func(l LogLine) bool {
			return strings.Contains(l.Text, "re-asserting this host's clients") && strings.Contains(l.Text, "why=periodic")
		})
	}
	for deadline := time.Now().Add(30 * time.Second); !periodicAfter(ready.Add(3 * time.Second)); {
		if time.Now().After(deadline) {
			t.Fatal("no periodic re-assertion round within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// As DAI polices: a token bucket of rate packets a second, burst rate.
	// What goes over is counted apart. Only re-pointing requests count
	// (ARP requests with the VIP as sender): the host's kernel also asks
	// for its missing peers.
	table := "arpshare_dai_" + h.Name
	rules := fmt.Sprintf(`table netdev %[1]s {
	counter repoint {}
	counter over {}
	chain port {
		type filter hook ingress device %[2]q priority 0; policy accept;
		arp operation request arp saddr ip %[3]s counter name "repoint" limit rate over %[4]d/second burst %[4]d packets counter name "over"
	}
}`, table, h.Name, VIP, rate)
	nft := func(stdin string, args ...string) []byte {
		t.Helper()
		cmd := exec.Command("ip", append([]string{"netns", "exec", l.switchNS, "nft"}, args...)...)
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nft %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return out
	}
	nft(rules, "-f", "-")
	defer nft("", "delete", "table", "netdev", table)
	counts := func() map[string]int64 {
		var list struct {
			Nftables []struct {
				Counter *struct {
					Name    string `json:"name"`
					Packets int64  `json:"packets"`
				} `json:"counter"`
			} `json:"nftables"`
		}
		if err := json.Unmarshal(nft("", "-j", "list", "counters", "table", "netdev", table), &list); err != nil {
			t.Fatal(err)
		}
		m := map[string]int64{}
		for _, o := range list.Nftables {
			if o.Counter != nil {
				m[o.Counter.Name] = o.Counter.Packets
			}
		}
		return m
	}
	// Two rounds at least: 40 clients at 5 a second take 8 s each.
	deadline := time.Now().Add(40 * time.Second)
	for counts()["repoint"] < 2*clients && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
	}
	c := counts()
	t.Logf("%s sent %d re-pointing requests, %d over %d a second", h.Name, c["repoint"], c["over"], rate)
	if c["repoint"] < 2*clients {
		t.Errorf("%d re-pointing requests in 40 s, want two rounds of %d clients", c["repoint"], clients)
	}
	if c["over"] != 0 {
		if lines, err := h.LogSince(time.Time{}); err == nil {
			for _, l := range lines {
				if strings.Contains(l.Text, "re-point") || strings.Contains(l.Text, "re-assert") || strings.Contains(l.Text, "settled") {
					t.Log(l.Text)
				}
			}
		}
		t.Errorf("%d re-pointing requests over %d a second (burst %d): a DAI port would be error-disabled", c["over"], rate, rate)
	}
}
