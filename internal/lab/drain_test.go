package lab

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// setNode adds lines to the [node] table of h's config, as written by
// WriteConfig; the daemon reads them at its next start.
func setNode(t *testing.T, h *Host, lines string) {
	t.Helper()
	b, err := os.ReadFile(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "[node]\n", "[node]\n"+lines+"\n", 1)
	if err := os.WriteFile(h.Config, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// servedBy dials the VIP once from every client and returns who answered
// each ("" for a failed attempt, with the error in errs).
func servedBy(clients []*Client) (served map[string]string, errs []string) {
	served = map[string]string{}
	for _, c := range clients {
		h, err := c.Dial(probeTimeout)
		served[c.Name] = h
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", c.Name, err))
		}
	}
	return served, errs
}

// TestDrainLastRefused: draining the last eligible host of a VIP is refused
// with a message naming the VIP and --force, and that host keeps serving
// every client; of two hosts drained at the same moment, the one whose name
// sorts last is refused.
func TestDrainLastRefused(t *testing.T) {
	requirePrivileged(t)
	l := newLab(t, 2, 12, HostConfig{})
	startAll(t, l.Hosts)
	h2 := l.Hosts[1]
	waitAssignment(t, l.Clients, expected(l.Clients, map[string]int{"h1": 1, "h2": 1}), 10*time.Second)

	t.Run("at the same moment", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, h := range l.Hosts {
			wg.Go(func() { _, errs[i] = h.Run("drain") })
		}
		wg.Wait()
		if errs[0] != nil || errs[1] == nil || !strings.Contains(errs[1].Error(), "last eligible host of vip web") {
			t.Fatalf("h1 and h2 drained at once: h1 %v, h2 %v; want h1 drained, h2 refused", errs[0], errs[1])
		}
		s, err := h2.Status()
		if err != nil || s.Draining || !s.Serving {
			t.Fatalf("h2 after its refused drain: draining %v, serving %v %q (%v)", s.Draining, s.Serving, s.NotServing, err)
		}
	})

	t.Run("the last host", func(t *testing.T) {
		// h1 stays drained from above: h2 is the last eligible host.
		out, err := h2.Run("drain")
		if err == nil || !strings.Contains(out, "last eligible host of vip web ("+VIP.String()+")") || !strings.Contains(out, "--force") {
			t.Fatalf("drain of the last host: %v\n%s\nwant refused, naming vip web and --force", err, out)
		}
		served, errs := servedBy(l.Clients)
		for c, h := range served {
			if h != "h2" {
				t.Errorf("after the refused drain, client %s served by %q, want h2", c, h)
			}
		}
		if len(errs) > 0 {
			t.Errorf("failed attempts after the refused drain: %v", errs)
		}
		if out, err := h2.Run("drain", "--force", "--timeout", "10s"); err != nil {
			t.Errorf("drain --force of the last host: %v\n%s", err, out)
		}
	})
}

// TestDrainWaitsForPeers: with node.repoint_rate = 10, the drain of a host
// returns only once its peer has re-pointed its clients, which takes at
// least as long as the rate implies; right after it returns, every client
// is served by the peer.
func TestDrainWaitsForPeers(t *testing.T) {
	requirePrivileged(t)
	const rate = 10
	l := newLab(t, 2, 60, HostConfig{})
	h1 := l.Hosts[0]
	for _, h := range l.Hosts {
		setNode(t, h, fmt.Sprintf("repoint_rate = %d", rate))
	}
	startAll(t, l.Hosts)
	waitAssignment(t, l.Clients, expected(l.Clients, map[string]int{"h1": 1, "h2": 1}), 30*time.Second)
	mine := count(expected(l.Clients, map[string]int{"h1": 1, "h2": 1}))["h1"]
	// Every client gets one packet at least (it answers the first, or gets
	// three): mine at rate a second.
	least := time.Duration(mine-1) * time.Second / rate
	if least < 2*time.Second {
		t.Fatalf("h1 serves %d clients only: the test cannot tell a wait from a fixed second", mine)
	}
	start := time.Now()
	out, err := h1.Run("drain", "--timeout", "2m")
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	served, errs := servedBy(l.Clients)
	t.Logf("drain of h1 (%d clients, repoint_rate %d) took %s, at least %s by the rate", mine, rate, took.Round(10*time.Millisecond), least)
	if took < least {
		t.Errorf("drain returned after %s, before h2 can have re-pointed %d clients at %d/s (%s)", took, mine, rate, least)
	}
	for c, h := range served {
		if h != "h2" {
			t.Errorf("right after the drain returned, client %s served by %q, want h2", c, h)
		}
	}
	if len(errs) > 0 {
		t.Errorf("failed attempts right after the drain: %v", errs)
	}
	if !strings.Contains(out, "h1 (NOT SERVING: draining") {
		t.Errorf("drain printed:\n%s", out)
	}

	// Too short a timeout: exit 1, the host stays drained.
	if _, err := h1.Run("resume"); err != nil {
		t.Fatal(err)
	}
	waitAssignment(t, l.Clients, expected(l.Clients, map[string]int{"h1": 1, "h2": 1}), time.Minute)
	out, err = h1.Run("drain", "--timeout", "300ms")
	if err == nil || !strings.Contains(out, "not done within 300ms") || !strings.Contains(out, "h2") {
		t.Errorf("drain with a timeout too short: %v\n%s\nwant exit 1 naming h2", err, out)
	}
	if s, err := h1.Status(); err != nil || !s.Draining {
		t.Errorf("h1 after a drain that timed out: draining %v (%v), want true", s.Draining, err)
	}
}

// TestStopLastDoesNotDrain: SIGTERM to the last eligible host does not
// drain it: its peer never sees it draining, and it serves every client
// until it exits.
func TestStopLastDoesNotDrain(t *testing.T) {
	requirePrivileged(t)
	l := newLab(t, 2, 8, HostConfig{})
	startAll(t, l.Hosts)
	h1, h2 := l.Hosts[0], l.Hosts[1]
	if _, err := h1.Run("drain"); err != nil {
		t.Fatal(err)
	}
	waitAssignment(t, l.Clients, expected(l.Clients, map[string]int{"h2": 1}), 10*time.Second)

	probe := StartProbe(l.Clients, VIP, 50*time.Millisecond, probeTimeout)
	if err := probe.WaitServed(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	// h1 watches h2's metadata until h2 is gone.
	var drained []string
	stopped := make(chan error, 1)
	stopAt := time.Now()
	go func() { stopped <- h2.Stop(20 * time.Second) }()
	var exitedAt time.Time
	for exitedAt.IsZero() {
		select {
		case err := <-stopped:
			exitedAt = time.Now()
			if err != nil {
				t.Errorf("h2's stop: %v", err)
			}
		case <-time.After(20 * time.Millisecond):
		}
		s, err := h1.Status()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range s.Members {
			if m.Name == "h2" && m.Draining {
				drained = append(drained, time.Now().Format("15:04:05.000"))
			}
		}
	}
	samples := probe.Stop()
	t.Logf("h2 exited %s after SIGTERM", exitedAt.Sub(stopAt).Round(10*time.Millisecond))
	if len(drained) > 0 {
		t.Errorf("h1 saw h2, the last eligible host, draining as it stopped, %d times from %s", len(drained), drained[0])
	}
	waitLog(t, h2, "stopping WITHOUT draining", time.Second)
	// Until it exited, h2 served every attempt.
	for c, ss := range samples {
		for _, s := range ss {
			if s.At.Before(exitedAt.Add(-probeTimeout)) && s.Host != "h2" {
				t.Errorf("client %s, before h2 exited: served by %q (%v)", c, s.Host, s.Err)
			}
		}
	}
}

// TestFleetRestart: SIGTERM to every host at once, each started again as
// soon as it has exited, as `systemctl restart arpshare` on the whole fleet
// does. The host sorting last keeps answering until another is back, the
// others drain to it: no client's connection attempt fails (but for a
// handshake reset as it moves between two live hosts).
func TestFleetRestart(t *testing.T) {
	requirePrivileged(t)
	l := newLab(t, 3, 12, HostConfig{})
	startAll(t, l.Hosts)
	base := expected(l.Clients, map[string]int{"h1": 1, "h2": 1, "h3": 1})
	waitAssignment(t, l.Clients, base, 10*time.Second)
	probe := StartProbe(l.Clients, VIP, 100*time.Millisecond, probeTimeout)
	if err := probe.WaitServed(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, h := range l.Hosts {
		wg.Go(func() {
			start := time.Now()
			if err := h.Stop(45 * time.Second); err != nil {
				t.Errorf("stop %s: %v", h.Name, err)
			}
			t.Logf("%s stopped in %s", h.Name, time.Since(start).Round(10*time.Millisecond))
			if err := h.Start(); err != nil {
				t.Errorf("start %s again: %v", h.Name, err)
			}
		})
	}
	wg.Wait()
	for _, h := range l.Hosts {
		b, _ := os.ReadFile(h.Log)
		for _, line := range strings.Split(string(b), "\n") {
			for _, m := range []string{"stopping", "last eligible host", "answering again", "another host is eligible", "arpshare ready"} {
				if strings.Contains(line, m) {
					t.Logf("%s: %s", h.Name, line)
					break
				}
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := WaitMembers(ctx, l.Hosts, 3); err != nil {
		t.Fatal(err)
	}
	waitAssignment(t, l.Clients, base, 30*time.Second)
	samples := probe.Stop()
	failed, handovers := failures(samples)
	t.Logf("handshakes reset as their client moved: %d", handovers)
	if len(failed) > 0 {
		t.Errorf("%d failed connection attempts during the restart of every host: %v", len(failed), failed)
	}
}
