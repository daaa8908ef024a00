package lab

import (
	"errors"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arpshare/arpshare/internal/api"
)

// failoverLimit is how soon the other hosts must serve the clients of a
// host whose serving link failed: the usual failover time.
const failoverLimit = 1500 * time.Millisecond

// newGossipNetLab is newLab with gossip on a network of its own (eth1 of
// each host), the VIP on eth0.
func newGossipNetLab(t *testing.T, hosts, clients int, cfg HostConfig) *Lab {
	t.Helper()
	return newLabWith(t, Options{Hosts: hosts, Clients: clients, Config: cfg, GossipNet: true})
}

// TestServingLinkFails: gossip runs on its own network and the VIP on eth0.
// The serving link of the busiest host fails while its gossip goes on: its
// eth0 is set down; the switch's end of its cable goes down (no carrier);
// its eth0 is removed and made again under the same name (a new interface
// index and MAC). Each time the other hosts serve its clients within
// failoverLimit while the other clients notice nothing, its status and
// metrics say why, and once its link is back it serves its clients again,
// in both families (an NDP socket is not told that its interface went
// away: the daemon must reopen it).
// Last, the VIP is taken off its lo: the daemon puts it back at once.
func TestServingLinkFails(t *testing.T) {
	requirePrivileged(t)
	l := newGossipNetLab(t, 3, 12, HostConfig{Metrics: true, IPv6VIP: true})
	startAll(t, l.Hosts)
	base, base6 := assignment(t, l.Clients), assignmentTo(t, l.Clients, VIP6)
	perHost := count(base)
	h := l.Hosts[0]
	for _, o := range l.Hosts {
		if perHost[o.Name] > perHost[h.Name] {
			h = o
		}
	}
	t.Logf("clients per host: %v; the link of %s fails", perHost, h.Name)
	port := func(args ...string) func() error {
		return func() error { return ip(append([]string{"-n", l.switchNS, "link", "set", h.Name}, args...)...) }
	}
	for _, fault := range []struct {
		name, reason string
		fail, heal   func() error
	}{
		{"interface down", "link eth0: down", func() error { return h.Link("down") }, func() error { return h.Link("up") }},
		{"no carrier", "link eth0: no carrier", port("down"), port("up")},
		{"interface removed and added again", "link eth0: missing",
			func() error { return ip("-n", l.switchNS, "link", "del", h.Name) }, func() error { return replug(l, h) }},
	} {
		t.Run(fault.name, func(t *testing.T) {
			linkFails(t, l, h, base, fault.reason, fault.fail)
			if t.Failed() {
				return
			}
			healed := time.Now()
			if err := fault.heal(); err != nil {
				t.Fatal(err)
			}
			waitAssignment(t, l.Clients, base, 15*time.Second)
			t.Logf("every client served by its owner again %s after the link came back", time.Since(healed).Round(time.Millisecond))
			waitAssignmentTo(t, l.Clients, VIP6, base6, 15*time.Second)
			checkLinkState(t, h, "", "1")
			// h re-points its clients as soon as it sees itself eligible;
			// the next fault must find every host knowing it is, or a
			// host that never saw it back has nothing to re-point.
			waitEligible(t, l.Hosts, h.Name)
		})
		if t.Failed() {
			return
		}
	}
	t.Run("VIP taken off lo", func(t *testing.T) {
		probe := StartProbe(l.Clients, VIP, 100*time.Millisecond, 200*time.Millisecond)
		if err := probe.WaitServed(10 * time.Second); err != nil {
			probe.Stop()
			t.Fatal(err)
		}
		removed := time.Now()
		if err := ip("-n", h.NS, "addr", "del", netip.PrefixFrom(VIP, 32).String(), "dev", "lo"); err != nil {
			probe.Stop()
			t.Fatal(err)
		}
		for {
			if has, err := h.HasVIP(); err != nil || has {
				break
			}
			if time.Since(removed) > 5*time.Second {
				probe.Stop()
				t.Fatalf("the VIP not back on %s's lo within 5 s", h.Name)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("VIP back on %s's lo after %s", h.Name, time.Since(removed).Round(time.Millisecond))
		if err := probe.WaitServed(5 * time.Second); err != nil {
			t.Error(err)
		}
		probe.Stop()
		waitLog(t, h, "VIP was taken off lo: put it back", 5*time.Second)
		waitAssignment(t, l.Clients, base, 10*time.Second)
	})
}

// linkFails makes h's serving link fail with fail while every client
// connects, and checks that h's clients are served by their new owners
// within failoverLimit, that no client of another host failed or moved,
// and that h's status and metrics say reason.
func linkFails(t *testing.T, l *Lab, h *Host, base map[string]string, reason string, fail func() error) {
	t.Helper()
	var others []string
	for _, o := range l.Hosts {
		if o != h {
			others = append(others, o.Name)
		}
	}
	probe := StartProbe(l.Clients, VIP, 100*time.Millisecond, 200*time.Millisecond)
	if err := probe.WaitServed(10 * time.Second); err != nil {
		probe.Stop()
		t.Fatal(err)
	}
	failed := time.Now()
	if err := fail(); err != nil {
		probe.Stop()
		t.Fatal(err)
	}
	waitMoved(t, probe, l.Clients, base, h.Name, failed, 15*time.Second)
	samples := probe.Stop()
	var worst time.Duration
	for _, c := range l.Clients {
		ss := samples[c.Name]
		if base[c.Name] != h.Name {
			for _, s := range ss {
				if s.Err != nil || s.Host != base[c.Name] {
					t.Errorf("client %s of %s: attempt at %s served by %q, error %v", c.Name, base[c.Name], s.At.Sub(failed).Round(time.Millisecond), s.Host, s.Err)
					break
				}
			}
			continue
		}
		s, _ := FirstServedAfter(ss, failed, h.Name)
		took := s.At.Sub(failed)
		worst = max(worst, took)
		if took > failoverLimit {
			t.Errorf("client %s of %s served by %s only %s after its link failed, want within %s", c.Name, h.Name, s.Host, took.Round(time.Millisecond), failoverLimit)
		}
		if want := owner(others, c); ss[len(ss)-1].Host != want {
			t.Errorf("client %s of %s now served by %q, its new owner is %s", c.Name, h.Name, ss[len(ss)-1].Host, want)
		}
	}
	t.Logf("the clients of %s were served by the others at most %s after its link failed", h.Name, worst.Round(time.Millisecond))
	checkLinkState(t, h, reason, "0")
}

// checkLinkState checks what h's status and metrics say of its link: the
// reason it cannot serve ("" if it can), and the value of the link gauges
// and of its VIPs' healthy and serving gauges.
func checkLinkState(t *testing.T, h *Host, reason, gauge string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := h.Status()
		if err != nil {
			t.Fatal(err)
		}
		if len(s.VIPs) == 2 && !slices.ContainsFunc(s.VIPs, func(v api.VIPStatus) bool {
			return v.Link != reason || reason == "" && !v.Answering
		}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s status of the VIPs: %+v; want link %q", h.Name, s.VIPs, reason)
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, err := h.Run("status")
	if ee := (*exec.ExitError)(nil); reason != "" && (!errors.As(err, &ee) || ee.ExitCode() != 5 ||
		!strings.Contains(out, "vip web: "+reason) || !strings.Contains(out, "vip web6: "+reason)) {
		t.Errorf("arpshare status on %s, link failed: %v\n%s", h.Name, err, out)
	} else if reason == "" && err != nil {
		t.Errorf("arpshare status on %s, link back: %v\n%s", h.Name, err, out)
	}
	m, err := h.Scrape()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(m, "\n")
	for _, name := range []string{"arpshare_link_up", "arpshare_link_serving"} {
		if want := name + `{interface="eth0"} ` + gauge; !slices.Contains(lines, want) {
			t.Errorf("%s metrics: no %q", h.Name, want)
		}
	}
	for _, name := range []string{"arpshare_vip_healthy", "arpshare_vip_serving"} {
		for _, vip := range []string{"web", "web6"} {
			if want := name + `{vip="` + vip + `"} ` + gauge; !slices.Contains(lines, want) {
				t.Errorf("%s metrics: no %q", h.Name, want)
			}
		}
	}
}

// waitEligible waits until every host's status counts name eligible for
// both VIPs.
func waitEligible(t *testing.T, hosts []*Host, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, o := range hosts {
		for {
			s, err := o.Status()
			if err != nil {
				t.Fatal(err)
			}
			if len(s.VIPs) == 2 && slices.Contains(s.VIPs[0].Eligible, name) && slices.Contains(s.VIPs[1].Eligible, name) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s does not count %s eligible for both VIPs: %v", o.Name, name, s.VIPs)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// replug cables h's eth0 to the switch again, as a new interface with its
// addresses (as the host's network configuration would put them back).
func replug(l *Lab, h *Host) error {
	for _, s := range [][]string{
		{"-n", l.switchNS, "link", "add", h.Name, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
		{"-n", l.switchNS, "link", "set", h.Name, "master", "br0", "up"},
		{"-n", h.NS, "addr", "add", netip.PrefixFrom(h.Addr, subnet).String(), "dev", "eth0"},
		{"-n", h.NS, "addr", "add", netip.PrefixFrom(h.Addr6, subnet6).String(), "dev", "eth0", "nodad"},
		{"-n", h.NS, "link", "set", "eth0", "up"},
	} {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}
