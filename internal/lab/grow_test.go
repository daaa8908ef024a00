package lab

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
)

// TestGrowCluster follows docs/operations.md, "Adding and removing a host",
// on real kernels: a fourth host joins a cluster of three whose daemons are
// reloaded, never restarted; it serves its share of the clients and counts
// toward quorum (with expect = 4, the cluster keeps its quorum with h2
// stopped only because h4 counts). Then it is drained, stopped and taken
// out of the others' peers by a reload: the three serve every client again
// and count quorum out of three.
func TestGrowCluster(t *testing.T) {
	requirePrivileged(t)
	l := newLab(t, 3, 10, HostConfig{Expect: 3})
	startAll(t, l.Hosts)
	h1, h2, h3 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	pids := map[string]int{}
	for _, h := range l.Hosts {
		pids[h.Name] = h.PID()
	}
	weights := map[string]int{"h1": 1, "h2": 1, "h3": 1}
	want := func() map[string]string {
		var cs []gossip.Candidate
		for name, w := range weights {
			cs = append(cs, gossip.Candidate{Name: name, Weight: w})
		}
		m := map[string]string{}
		for _, c := range l.Clients {
			m[c.Name] = policy.Rendezvous(cs, VIP, c.Addr)
		}
		return m
	}
	waitAssignment(t, l.Clients, want(), 10*time.Second)
	reload := func(hs []*Host, hc HostConfig) {
		t.Helper()
		for _, h := range hs {
			since := time.Now()
			if err := h.WriteConfig(hc); err != nil {
				t.Fatal(err)
			}
			if err := h.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			waitLogSince(t, h, since, "config reloaded", 5*time.Second)
		}
	}
	waitStatus := func(h *Host, what string, ok func(expect int, quorum bool) bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			s, err := h.Status()
			if err == nil && ok(s.Expect, s.Quorum) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: never %s: expect %d, quorum %v (%v)", h.Name, what, s.Expect, s.Quorum, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// Add h4: its config names all four, with a weight of 3 so that it
	// owns clients among ten for sure.
	h4, err := l.AddHost()
	if err != nil {
		t.Fatal(err)
	}
	if err := h4.WriteConfig(HostConfig{Expect: 4, Peers: 4, Weight: 3}); err != nil {
		t.Fatal(err)
	}
	if err := h4.Start(); err != nil {
		t.Fatal(err)
	}
	reload([]*Host{h1, h2, h3}, HostConfig{Expect: 4, Peers: 4})
	all := []*Host{h1, h2, h3, h4}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := WaitMembers(ctx, all, 4); err != nil {
		t.Fatal(err)
	}
	weights["h4"] = 3
	grown := want()
	if count(grown)["h4"] == 0 {
		t.Fatalf("no client for h4 in %v: pick other clients", grown)
	}
	waitAssignment(t, l.Clients, grown, 15*time.Second)
	for _, h := range all {
		waitStatus(h, "expect 4 with quorum", func(e int, q bool) bool { return e == 4 && q })
	}
	// h4 counts: with h2 stopped, h1, h3 and h4 are 3 of 4.
	if err := h2.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := WaitMembers(ctx, []*Host{h1, h3, h4}, 3); err != nil {
		t.Fatal(err)
	}
	waitStatus(h1, "a quorum of h1, h3, h4", func(e int, q bool) bool { return e == 4 && q })
	if err := h2.Start(); err != nil {
		t.Fatal(err)
	}
	pids["h2"] = h2.PID()
	if err := WaitMembers(ctx, all, 4); err != nil {
		t.Fatal(err)
	}

	// Remove h4: drain, stop, take it out of the others' peers.
	if out, err := h4.Run("drain", "--timeout", "10s"); err != nil {
		t.Fatalf("drain h4: %v\n%s", err, out)
	}
	delete(weights, "h4")
	waitAssignment(t, l.Clients, want(), 10*time.Second)
	if err := h4.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	three := []*Host{h1, h2, h3}
	reload(three, HostConfig{Expect: 3})
	for _, h := range three {
		waitStatus(h, "expect 3 with quorum", func(e int, q bool) bool { return e == 3 && q })
		if h.PID() != pids[h.Name] {
			t.Errorf("%s was restarted", h.Name)
		}
	}
	waitAssignment(t, l.Clients, want(), 10*time.Second)
}

// waitLogSince waits for a log line of the host, written after since, whose
// message is msg.
func waitLogSince(t *testing.T, h *Host, since time.Time, msg string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		lines, _ := h.LogSince(since)
		if slices.ContainsFunc(lines, func(l LogLine) bool { return strings.Contains(l.Text, msg) }) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s log never said %q after %s", h.Name, msg, since.Format(time.TimeOnly))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAPIReaders runs the daemon as its own user, as the unit does, and the
// CLI as other users: one in the socket's group reads status but may not
// drain (the daemon checks the peer's credentials); one outside the group
// cannot open the socket at all.
func TestAPIReaders(t *testing.T) {
	requirePrivileged(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv from util-linux")
	}
	const daemonUID, readerUID = 65534, 65533
	l, err := New(Options{Hosts: 1, Clients: 1, Binary: build(t), User: daemonUID})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	// The group may reach the socket (the package's /run/arpshare is 0755).
	if err := os.Chmod(l.Dir, 0o750); err != nil {
		t.Fatal(err)
	}
	startAll(t, l.Hosts)
	h := l.Hosts[0]
	as := func(uid, gid int, args ...string) (string, error) {
		argv := append([]string{"--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(gid), "--clear-groups", l.binary, args[0], "--socket", h.Socket}, args[1:]...)
		out, err := exec.Command("setpriv", argv...).CombinedOutput()
		return string(out), err
	}
	out, err := as(readerUID, daemonUID, "status", "--json")
	var s struct{ Node string }
	if jerr := json.Unmarshal([]byte(out), &s); jerr != nil || s.Node != h.Name {
		t.Errorf("status by a reader: %v %v: %s", err, jerr, out)
	}
	out, err = as(readerUID, daemonUID, "drain", "--timeout", "5s")
	if err == nil || !strings.Contains(out, "only root and") {
		t.Errorf("drain by a reader: %v: %s", err, out)
	}
	if st, _ := h.Status(); st.Draining {
		t.Error("a reader drained the host")
	}
	out, err = as(readerUID, readerUID, "status")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 4 {
		t.Errorf("status by a user outside the group: %v: %s, want exit 4", err, out)
	}
	// The daemon's own user is an operator.
	if out, err := as(daemonUID, daemonUID, "drain", "--force", "--timeout", "5s"); err != nil {
		t.Errorf("drain by the daemon's user: %v: %s", err, out)
	}
}
