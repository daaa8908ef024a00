package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/api"
)

// requirePrivileged skips a test that needs root and ip(8), unless
// ARPSHARE_REQUIRE_PRIVILEGED is set (as CI does): then it fails, so the
// real tests can never pass by being skipped.
func requirePrivileged(t *testing.T) {
	t.Helper()
	reason := ""
	if os.Geteuid() != 0 {
		reason = "needs root to make network namespaces"
	} else if _, err := exec.LookPath("ip"); err != nil {
		reason = "needs ip(8) from iproute2"
	}
	if reason == "" {
		return
	}
	if os.Getenv("ARPSHARE_REQUIRE_PRIVILEGED") != "" {
		t.Fatalf("%s, and ARPSHARE_REQUIRE_PRIVILEGED is set", reason)
	}
	t.Skip(reason)
}

// build compiles the arpshare binary into a test-owned directory.
func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "arpshare")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/arpshare").CombinedOutput()
	if err != nil {
		t.Fatalf("build arpshare: %v\n%s", err, out)
	}
	return bin
}

// newLab builds a lab whose hosts all start with cfg; it is removed when the
// test ends, after the daemons' logs are shown if the test failed.
func newLab(t *testing.T, hosts, clients int, cfg HostConfig) *Lab {
	t.Helper()
	return newLabWith(t, Options{Hosts: hosts, Clients: clients, Config: cfg})
}

// newLabWith is newLab with every option; it fills in the binary and the
// folder.
func newLabWith(t *testing.T, o Options) *Lab {
	t.Helper()
	o.Binary, o.Dir = build(t), t.TempDir()
	l, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range l.Hosts {
				if b, err := readTail(h.Log, 6000); err == nil {
					t.Logf("--- %s log (tail, no debug):\n%s", h.Name, b)
				}
			}
		}
		l.Close()
	})
	return l
}

// readTail returns the end of a daemon's log, without memberlist's debug
// chatter.
func readTail(path string, n int) ([]byte, error) {
	b, err := os.ReadFile(path)
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, `level=DEBUG msg="memberlist:`) {
			keep = append(keep, l)
		}
	}
	return tail([]byte(strings.Join(keep, "\n")), n), err
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func startAll(t *testing.T, hosts []*Host) {
	t.Helper()
	for _, h := range hosts {
		if err := h.Start(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := WaitMembers(ctx, hosts, len(hosts)); err != nil {
		t.Fatal(err)
	}
}

// assignment dials once from every client (retrying while its first ARP
// resolves) and returns which host served it.
func assignment(t *testing.T, clients []*Client) map[string]string {
	t.Helper()
	return assignmentTo(t, clients, VIP)
}

// statusWhen returns the host's status once ok holds for it, or after 3 s
// whatever it is then. Client counts are recounted at most once a second
// while the table keeps changing (the daemon's ownerCountsAge).
func statusWhen(t *testing.T, h *Host, ok func(api.Status) bool) api.Status {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		s, err := h.Status()
		if err != nil {
			t.Fatal(err)
		}
		if ok(s) || time.Now().After(deadline) {
			return s
		}
	}
}

// waitAssignment dials until every client is served as want says.
func waitAssignment(t *testing.T, clients []*Client, want map[string]string, within time.Duration) {
	t.Helper()
	waitAssignmentTo(t, clients, VIP, want, within)
}

// waitAssignmentTo is waitAssignment for another VIP.
func waitAssignmentTo(t *testing.T, clients []*Client, vip netip.Addr, want map[string]string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := map[string]string{}
		for _, c := range clients {
			if h, err := c.DialVIP(vip, 300*time.Millisecond); err == nil {
				got[c.Name] = h
			}
		}
		diff := cmp.Diff(want, got)
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("assignment not restored within %s (-want +got):\n%s", within, diff)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func count(assign map[string]string) map[string]int {
	m := map[string]int{}
	for _, h := range assign {
		m[h]++
	}
	return m
}

func owner(survivors []string, c *Client) string {
	var cs []gossip.Candidate
	for _, s := range survivors {
		cs = append(cs, gossip.Candidate{Name: s, Weight: 1})
	}
	return policy.Rendezvous(cs, VIP, c.Addr)
}

// TestSharingAndFailover is the core promise, on real kernels: 3 hosts share
// one VIP among 20 clients; a host's power loss moves only its clients; a
// graceful stop moves its clients without an outage; a restarted host gets
// its clients back.
func TestSharingAndFailover(t *testing.T) {
	requirePrivileged(t)
	l := newLab(t, 3, 20, HostConfig{})
	startAll(t, l.Hosts)
	names := []string{"h1", "h2", "h3"}

	// Every client is served, by the host the ownership function names.
	base := assignment(t, l.Clients)
	for _, c := range l.Clients {
		if want := owner(names, c); base[c.Name] != want {
			t.Errorf("client %s served by %s, owner is %s", c.Name, base[c.Name], want)
		}
	}
	perHost := count(base)
	for _, h := range names {
		if perHost[h] == 0 {
			t.Errorf("host %s serves no client: %v", h, perHost)
		}
	}

	// Every host's `arpshare status` counts the same clients per host.
	for _, h := range l.Hosts {
		s := statusWhen(t, h, func(s api.Status) bool { return len(s.VIPs) == 1 && s.VIPs[0].Clients == len(l.Clients) })
		if len(s.VIPs) != 1 || s.VIPs[0].Clients != len(l.Clients) || !s.VIPs[0].Answering {
			t.Fatalf("%s status: %+v", h.Name, s.VIPs)
		}
		if diff := cmp.Diff(perHost, s.VIPs[0].Owners); diff != "" {
			t.Errorf("%s status: clients per host (-served +reported):\n%s", h.Name, diff)
		}
		if has, err := h.HasVIP(); err != nil || !has {
			t.Errorf("%s: VIP not on lo (%v)", h.Name, err)
		}
	}
	for _, h := range l.Hosts {
		if notes := h.Notes(); !slices.Contains(notes, "READY=1") || !slices.ContainsFunc(notes, func(n string) bool { return strings.HasPrefix(n, "STATUS=1 VIPs, 3 live hosts") }) {
			t.Errorf("%s told systemd %q, want READY=1 and a STATUS", h.Name, notes)
		}
		// WatchdogSec=3s: a ping every second while the loops turn.
		deadline := time.Now().Add(5 * time.Second)
		for !slices.Contains(h.Notes(), "WATCHDOG=1") {
			if time.Now().After(deadline) {
				t.Errorf("%s never pinged the watchdog", h.Name)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	out, err := exec.Command(l.binary, "status", "--socket", l.Hosts[0].Socket).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "web") || !strings.Contains(string(out), "h3=") {
		t.Errorf("arpshare status table: %v\n%s", err, out)
	}

	t.Run("power loss", func(t *testing.T) {
		after := map[string]string{}
		for _, c := range l.Clients {
			after[c.Name] = owner([]string{"h1", "h3"}, c)
		}
		counted := startPortCount(t, l.Hosts[0], l.Hosts[2])
		powerLoss(t, l, l.Hosts[1], VIP, base, after)
		// The survivors re-pointed the dead host's clients, with ARP
		// requests, while they gossiped and served connections.
		for _, h := range []*Host{l.Hosts[0], l.Hosts[2]} {
			took := 0
			for _, c := range l.Clients {
				if base[c.Name] == "h2" && after[c.Name] == h.Name {
					took++
				}
			}
			counted(h, took)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("restart after power loss", func(t *testing.T) {
		h := l.Hosts[1]
		if err := h.PowerOn(); err != nil {
			t.Fatal(err)
		}
		rejoin(t, l, h, base)
	})
	if t.Failed() {
		return
	}

	t.Run("graceful stop", func(t *testing.T) {
		h := l.Hosts[2]
		survivors := []string{"h1", "h2"}
		probe := StartProbe(l.Clients, VIP, 50*time.Millisecond, 200*time.Millisecond)
		time.Sleep(300 * time.Millisecond)
		stopped := time.Now()
		if err := h.Stop(10 * time.Second); err != nil {
			t.Fatalf("%s: stop: %v", h.Name, err)
		}
		t.Logf("%s stopped in %s", h.Name, time.Since(stopped).Round(time.Millisecond))
		time.Sleep(time.Second) // keep probing past the exit
		samples := probe.Stop()
		for _, c := range l.Clients {
			ss := samples[c.Name]
			if o := LongestOutage(ss); o > 500*time.Millisecond {
				t.Errorf("client %s (of %s): outage of %s during a graceful stop", c.Name, base[c.Name], o)
			}
			want := base[c.Name]
			if want == h.Name {
				want = owner(survivors, c)
			}
			if last := ss[len(ss)-1]; last.Host != want {
				t.Errorf("client %s: served by %q after the stop, want %s", c.Name, last.Host, want)
			}
		}
		if has, err := h.HasVIP(); err != nil || has {
			t.Errorf("%s: VIP still on lo after a clean stop (%v)", h.Name, err)
		}
		if notes := h.Notes(); !slices.Contains(notes, "STOPPING=1") {
			t.Errorf("%s told systemd %q, want STOPPING=1", h.Name, notes)
		}
		rejoin(t, l, h, base)
	})
}

// startPortCount starts CountPort on hosts; the function it returns checks
// what one of them sent since: gossip, at least a 60-byte ARP request for
// each of the took clients it re-pointed, other frames (its answers to the
// clients' connections), and in all what the port's own counter has; and
// what it received: gossip, and in all what the port's counter has.
func startPortCount(t *testing.T, hosts ...*Host) func(h *Host, took int) {
	t.Helper()
	type start struct {
		read   func() (PortBytes, error)
		rx, tx int64
	}
	starts := map[*Host]start{}
	for _, h := range hosts {
		read, stop, err := h.CountPort()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
		starts[h] = start{read, portStat(t, h, "rx"), portStat(t, h, "tx")}
	}
	return func(h *Host, took int) {
		t.Helper()
		rx, tx := portStat(t, h, "rx")-starts[h].rx, portStat(t, h, "tx")-starts[h].tx
		b, err := starts[h].read()
		if err != nil {
			t.Fatal(err)
		}
		out, in := b.Sent, b.Received
		t.Logf("%s sent %d bytes: gossip %d, ARP %d; its port received %d. It received %d bytes, gossip %d; its port sent %d",
			h.Name, out.All.Bytes, out.Gossip().Bytes, out.ARP.Bytes, rx, in.All.Bytes, in.Gossip().Bytes, tx)
		if out.Gossip().Bytes == 0 || out.GossipUDP.Bytes == 0 || out.ARP.Bytes < int64(60*took) || out.All.Bytes <= out.Gossip().Bytes+out.ARP.Bytes {
			t.Errorf("%s: counted %+v sent, want gossip, ARP for %d clients (%d bytes) and more", h.Name, out, took, 60*took)
		}
		if in.Gossip().Bytes == 0 || in.GossipUDP.Bytes == 0 {
			t.Errorf("%s: counted %+v received, want gossip", h.Name, in)
		}
		// Read one after the other while the clients still connect.
		if d := out.All.Bytes - rx; d < -rx/20 || d > rx/20 {
			t.Errorf("%s: counted %d bytes sent in all, its port received %d", h.Name, out.All.Bytes, rx)
		}
		if d := in.All.Bytes - tx; d < -tx/20 || d > tx/20 {
			t.Errorf("%s: counted %d bytes received in all, its port sent %d", h.Name, in.All.Bytes, tx)
		}
	}
}

// portStat is what the switch's side of h's port has received (rx) or
// sent (tx) so far, in bytes.
func portStat(t *testing.T, h *Host, dir string) int64 {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", h.lab.switchNS, "cat", "/sys/class/net/"+h.Name+"/statistics/"+dir+"_bytes").CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %s bytes: %v: %s", h.Name, dir, err, out)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// rejoin starts h's daemon again and waits until it is back in the cluster
// and every client is served as in base.
func rejoin(t *testing.T, l *Lab, h *Host, base map[string]string) {
	t.Helper()
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := WaitMembers(ctx, l.Hosts, len(l.Hosts)); err != nil {
		t.Fatal(err)
	}
	waitAssignment(t, l.Clients, base, 10*time.Second)
}

// powerLoss cuts dead's power while every client connects to vip, waits
// until dead's clients are served again, and checks that they went to the
// owners in after while no client of a live host failed or moved.
func powerLoss(t *testing.T, l *Lab, dead *Host, vip netip.Addr, base, after map[string]string) {
	t.Helper()
	probe := StartProbe(l.Clients, vip, 100*time.Millisecond, 200*time.Millisecond)
	time.Sleep(500 * time.Millisecond)
	lost := time.Now()
	if err := dead.PowerOff(); err != nil {
		t.Fatal(err)
	}
	waitMoved(t, probe, l.Clients, base, dead.Name, lost, 15*time.Second)
	samples := probe.Stop()
	for _, c := range l.Clients {
		ss := samples[c.Name]
		if base[c.Name] != dead.Name {
			for _, s := range ss {
				if s.Err != nil || s.Host != base[c.Name] {
					t.Errorf("client %s of live %s (%s): attempt at %s served by %q, error %v",
						c.Name, base[c.Name], vip, s.At.Sub(lost).Round(time.Millisecond), s.Host, s.Err)
					break
				}
			}
			continue
		}
		if last := ss[len(ss)-1]; last.Host != after[c.Name] {
			t.Errorf("client %s of dead %s (%s) now served by %q, its new owner is %s", c.Name, dead.Name, vip, last.Host, after[c.Name])
		}
		if s, ok := FirstServedAfter(ss, lost, dead.Name); ok {
			t.Logf("client %s (%s) back after %s", c.Name, vip, s.At.Sub(lost).Round(time.Millisecond))
		}
	}
}

// waitMoved waits until every client of the dead host has been served by
// another host after it died.
func waitMoved(t *testing.T, probe *Probe, clients []*Client, base map[string]string, dead string, since time.Time, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		moved := true
		last := probe.Last()
		for _, c := range clients {
			if base[c.Name] == dead {
				if s := last[c.Name]; s.Err != nil || s.Host == dead || !s.At.After(since) {
					moved = false
				}
			}
		}
		if moved {
			return
		}
		if time.Now().After(deadline) {
			probe.Stop()
			t.Fatalf("clients of %s not served again within %s", dead, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestInterfaceComesAndGoes checks that a serving interface missing at start
// is waited for, and one that goes down and up is reopened, without a crash.
func TestInterfaceComesAndGoes(t *testing.T) {
	requirePrivileged(t)
	l := newLab(t, 2, 6, HostConfig{})
	h1, h2 := l.Hosts[0], l.Hosts[1]

	// h2's eth0 is missing (renamed away) when its daemon starts.
	for _, args := range [][]string{{"down"}, {"name", "eth9"}} {
		if err := h2.Link(args...); err != nil {
			t.Fatal(err)
		}
	}
	startAll(t, []*Host{h1})
	if err := h2.Start(); err != nil {
		t.Fatal(err)
	}
	waitLog(t, h2, "interface not usable, waiting for it", 10*time.Second)
	waitLog(t, h2, "arpshare ready", 10*time.Second) // its API is up
	s, err := h2.Status()
	if err != nil {
		t.Fatal(err)
	}
	if s.VIPs[0].Answering {
		t.Errorf("h2 answering on a missing interface: %+v", s.VIPs[0])
	}
	// systemd hears READY at once, with what the daemon waits for, and
	// `arpshare status` says the host does not serve.
	waiting := func(n string) bool {
		return strings.HasPrefix(n, "STATUS=") && strings.Contains(n, "waiting for interface eth0 (vip web)")
	}
	if notes := h2.Notes(); !slices.Contains(notes, "READY=1") || !slices.ContainsFunc(notes, waiting) {
		t.Errorf("h2 told systemd %q; want READY=1 and a STATUS saying it waits for eth0", notes)
	}
	waitLog(t, h2, "waiting for it to appear", time.Second)
	out, err := h2.Run("status")
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 5 || !strings.Contains(out, "vip web: link eth0: missing") {
		t.Errorf("arpshare status on h2 waiting for eth0: %v\n%s", err, out)
	}
	if err := ip("-n", h2.NS, "link", "set", "eth9", "name", "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := h2.Link("up"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := WaitMembers(ctx, l.Hosts, 2); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, c := range l.Clients {
		want[c.Name] = owner([]string{"h1", "h2"}, c)
	}
	waitAssignment(t, l.Clients, want, 10*time.Second)
	last := ""
	for _, n := range h2.Notes() {
		if strings.HasPrefix(n, "STATUS=") {
			last = n
		}
	}
	if last == "" || waiting(last) {
		t.Errorf("h2's last STATUS still says it waits for eth0: %q", last)
	}
	if out, err := h2.Run("status"); err != nil {
		t.Errorf("arpshare status on h2 serving: %v\n%s", err, out)
	}

	// h1's link flaps; its responder must reopen and answer fresh requests.
	if err := h1.Link("down"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := h1.Link("up"); err != nil {
		t.Fatal(err)
	}
	waitLog(t, h1, "interface lost, reopening", 10*time.Second)
	if err := WaitMembers(ctx, l.Hosts, 2); err != nil {
		t.Fatal(err)
	}
	for _, c := range l.Clients {
		if err := c.ForgetVIP(); err != nil {
			t.Fatal(err)
		}
	}
	waitAssignment(t, l.Clients, want, 10*time.Second)
}

func waitLog(t *testing.T, h *Host, line string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		b, _ := os.ReadFile(h.Log)
		if strings.Contains(string(b), line) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s log never said %q", h.Name, line)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestUnprivileged runs the daemons as the systemd unit does: not root, with
// only CAP_NET_RAW, CAP_NET_ADMIN and CAP_BPF. They must plumb the VIP, set
// the sysctls, open raw sockets, load the handover and fast path programs,
// share and fail over.
func TestUnprivileged(t *testing.T) {
	requirePrivileged(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		if os.Getenv("ARPSHARE_REQUIRE_PRIVILEGED") != "" {
			t.Fatal("setpriv (util-linux) not installed, and ARPSHARE_REQUIRE_PRIVILEGED is set")
		}
		t.Skip("needs setpriv from util-linux")
	}
	l, err := New(Options{Hosts: 2, Clients: 8, Binary: build(t), User: 65534, Config: HostConfig{IPv6VIP: true, Routers: []netip.Addr{netip.MustParseAddr("198.18.0.254")}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range l.Hosts {
				if b, err := readTail(h.Log, 6000); err == nil {
					t.Logf("--- %s log (tail, no debug):\n%s", h.Name, b)
				}
			}
		}
		l.Close()
	})
	startAll(t, l.Hosts)
	for _, h := range l.Hosts {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.PID()))
		if err != nil {
			t.Fatal(err)
		}
		// CAP_NET_ADMIN is bit 12, CAP_NET_RAW bit 13, CAP_BPF bit 39.
		for _, want := range []string{"Uid:\t65534\t65534\t65534\t65534\n", "CapEff:\t0000008000003000\n"} {
			if !strings.Contains(string(st), want) {
				t.Errorf("%s's daemon: no %q in its status:\n%s", h.Name, want, st)
			}
		}
	}
	base := assignment(t, l.Clients)
	if len(count(base)) != 2 {
		t.Errorf("clients per host: %v, want both hosts", count(base))
	}
	assignmentTo(t, l.Clients, VIP6)
	for _, h := range l.Hosts {
		if s, err := h.Status(); err != nil || !s.Handover.Active || len(s.Handover.Interfaces) != 1 {
			t.Errorf("%s: handover %+v (%v), want active on eth0", h.Name, s.Handover, err)
		}
		// So is the program that spreads routed clients' flows.
		if s, err := h.Status(); err != nil || !s.Spread.Active || s.Spread.Error != "" {
			t.Errorf("%s: spread %+v (%v), want active", h.Name, s.Spread, err)
		}
	}
	// The ARP fast path loads and answers with these capabilities too:
	// once the clients have asked twice (protected in the table), their
	// next requests are the kernel's.
	for range 2 {
		time.Sleep(500 * time.Millisecond)
		for _, c := range l.Clients {
			if err := c.ForgetVIP(); err != nil {
				t.Fatal(err)
			}
		}
		assignment(t, l.Clients)
	}
	// The daemon reads the program's counts at most once a second.
	var kernel uint64
	for deadline := time.Now().Add(3 * time.Second); kernel == 0 && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		for _, h := range l.Hosts {
			s, err := h.Status()
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range s.VIPs {
				kernel += v.KernelFrames["answered"]
			}
		}
	}
	if kernel == 0 {
		t.Error("no request answered by the kernel fast path as non-root")
	}
	for _, h := range l.Hosts {
		out, err := ipOut("netns", "exec", h.NS, "cat", "/proc/sys/net/ipv4/conf/eth0/arp_ignore", "/proc/sys/net/ipv4/conf/eth0/arp_announce")
		if err != nil || strings.Fields(out)[0] != "1" || strings.Fields(out)[1] != "2" {
			t.Errorf("%s: arp_ignore, arp_announce = %q (%v), want 1 and 2", h.Name, out, err)
		}
	}
	if err := l.Hosts[0].Stop(10 * time.Second); err != nil {
		t.Fatalf("graceful stop as non-root: %v", err)
	}
	if has, err := l.Hosts[0].HasVIP(); err != nil || has {
		t.Errorf("VIP still on lo after a non-root daemon stopped (%v)", err)
	}
	for _, c := range l.Clients {
		if h, err := c.Dial(time.Second); err != nil || h != "h2" {
			t.Errorf("client %s after h1 stopped: served by %q (%v), want h2", c.Name, h, err)
		}
	}
}
