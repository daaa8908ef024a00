package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sync/errgroup"

	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/api"
)

// TestStrangersAnswerNobody is the split-brain guard: a host with the wrong
// gossip key, one with another cluster label and one with a member's name
// each answer no client's ARP request, say why, and move no client; the
// cluster neither counts them nor notices them otherwise.
func TestStrangersAnswerNobody(t *testing.T) {
	requirePrivileged(t)
	l := newLab(t, 3, 12, HostConfig{})
	startAll(t, l.Hosts)
	before := assignment(t, l.Clients)
	macOf := map[string]string{} // host name -> MAC
	for _, h := range l.Hosts {
		mac, err := h.MAC()
		if err != nil {
			t.Fatal(err)
		}
		macOf[h.Name] = mac
	}

	otherKey := filepath.Join(l.Dir, "other.key")
	if err := WriteKey(otherKey); err != nil {
		t.Fatal(err)
	}
	strangers := []struct {
		what  string
		cfg   HostConfig
		cause string
	}{
		{"wrong key", HostConfig{KeyFile: otherKey}, "gossip key does not match peer 198.18.0.11:7946: copy " + otherKey + " from a cluster member"},
		{"wrong label", HostConfig{Cluster: "another-cluster"}, `cluster label is not "another-cluster"`},
		{"name taken", HostConfig{Name: "h1"}, `node name "h1" is taken by the live member at 198.18.0.11:7946`},
	}
	var bad []*Host
	for _, s := range strangers {
		h, err := l.AddHost()
		if err != nil {
			t.Fatal(err)
		}
		if err := h.WriteConfig(s.cfg); err != nil {
			t.Fatal(err)
		}
		if err := h.Start(); err != nil {
			t.Fatal(err)
		}
		bad = append(bad, h)
	}
	for i, h := range bad {
		deadline := time.Now().Add(15 * time.Second)
		for {
			s, err := h.Status()
			if err == nil && s.Join == gossip.JoinRejected && strings.Contains(s.JoinCause, strangers[i].cause) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s (%s): status %+v, %v; want rejected: %s", h.Name, strangers[i].what, s, err, strangers[i].cause)
			}
			time.Sleep(100 * time.Millisecond)
		}
		waitLog(t, h, "REJECTED by the cluster", time.Second)
	}

	// Over more than one re-join round (every 10 s), each client's request
	// is answered by its own host, and only by it.
	for end := time.Now().Add(12 * time.Second); time.Now().Before(end); {
		for _, c := range l.Clients {
			macs, err := c.ARPAnswers(VIP, 300*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{macOf[before[c.Name]]}, macs); diff != "" {
				t.Fatalf("%s, served by %s: ARP answers (-want +got):\n%s", c.Name, before[c.Name], diff)
			}
		}
	}
	if diff := cmp.Diff(before, assignment(t, l.Clients)); diff != "" {
		t.Errorf("clients moved (-before +after):\n%s", diff)
	}
	for _, h := range l.Hosts[:3] {
		s, err := h.Status()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range s.Members {
			got = append(got, m.Name+"@"+m.Address.Addr().String()+"="+m.State)
		}
		want := []string{"h1@198.18.0.11=alive", "h2@198.18.0.12=alive", "h3@198.18.0.13=alive"}
		if diff := cmp.Diff(want, got); diff != "" || s.Join != gossip.JoinMember {
			t.Errorf("%s: join %q, members (-want +got):\n%s", h.Name, s.Join, diff)
		}
	}
}

// deathsIn returns the lines of a host's log where its view showed one of
// alive dead.
func deathsIn(t *testing.T, h *Host, alive []string) []string {
	t.Helper()
	b, err := os.ReadFile(h.Log)
	if err != nil {
		t.Fatal(err)
	}
	var bad []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "cluster view changed") {
			continue
		}
		for _, name := range alive {
			if strings.Contains(line, name+"=dead") {
				bad = append(bad, line)
			}
		}
	}
	return bad
}

// TestStarvedHostGrabsNothing throttles one daemon to 5 % of a CPU for 30 s
// while the others serve: no host may see a live member dead, during or
// after, and no client may move.
func TestStarvedHostGrabsNothing(t *testing.T) {
	requirePrivileged(t)
	// The kernel fast path would answer the flood without waking the
	// daemons: the throttled daemon must do the work itself to fall behind.
	l := newLab(t, 3, 13, HostConfig{FastPath: "off"})
	startAll(t, l.Hosts)
	before := assignment(t, l.Clients[1:])
	undo, err := l.Hosts[2].Throttle(5)
	if err != nil {
		t.Fatal(err)
	}
	// ARP traffic keeps the throttled daemon busy: it has more to do than
	// its 5 % lets it, and falls behind.
	sent, err := l.Clients[0].Flood(context.Background(), VIP, 500, 3000, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d ARP requests while throttled; %s", sent, l.Hosts[2].ThrottleStats())
	undo()
	// It knew it was slow, and held back.
	waitLog(t, l.Hosts[2], "this host is slow", time.Second)
	time.Sleep(5 * time.Second) // stale suspicions, if acted on, would fire now
	names := []string{"h1", "h2", "h3"}
	for _, h := range l.Hosts {
		if lines := deathsIn(t, h, names); len(lines) > 0 {
			t.Errorf("%s saw a live member dead:\n%s", h.Name, strings.Join(lines, "\n"))
		}
	}
	if diff := cmp.Diff(before, assignment(t, l.Clients[1:])); diff != "" {
		t.Errorf("clients moved (-before +after):\n%s", diff)
	}
}

// daemonCPU returns the CPU time the hosts' daemons have used.
func daemonCPU(t *testing.T, hosts []*Host) time.Duration {
	t.Helper()
	var total time.Duration
	for _, h := range hosts {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", h.PID()))
		if err != nil {
			t.Fatal(err)
		}
		// Fields after the command's closing parenthesis; utime and stime
		// are the 14th and 15th of the whole line, in clock ticks (100/s).
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
		for _, s := range f[11:13] {
			n, _ := strconv.Atoi(s)
			total += time.Duration(n) * 10 * time.Millisecond
		}
	}
	return total
}

// TestFloodKillsNoMember floods the segment with ARP requests for the VIP
// from many fake clients for 60 s, at a rate that saturates this machine:
// no member may be declared dead, and the hosts go on serving.
func TestFloodKillsNoMember(t *testing.T) {
	requirePrivileged(t)
	l := newLab(t, 3, 4, HostConfig{})
	startAll(t, l.Hosts)
	before := assignment(t, l.Clients[2:])
	const rate, length = 40000, 60 * time.Second // per flooding client
	cpu0 := daemonCPU(t, l.Hosts)
	start := time.Now()
	var g errgroup.Group
	var sent [2]int
	for i := range sent {
		g.Go(func() (err error) {
			sent[i], err = l.Clients[i].Flood(context.Background(), VIP, 1000, rate, length)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("flood: %d ARP requests in %s (%.0f/s); the daemons used %.2f CPUs of %d", sent[0]+sent[1], took.Round(time.Millisecond),
		float64(sent[0]+sent[1])/took.Seconds(), (daemonCPU(t, l.Hosts)-cpu0).Seconds()/took.Seconds(), runtime.NumCPU())
	time.Sleep(2 * time.Second)
	names := []string{"h1", "h2", "h3"}
	for _, h := range l.Hosts {
		if lines := deathsIn(t, h, names); len(lines) > 0 {
			t.Errorf("%s saw a live member dead during the flood:\n%s", h.Name, strings.Join(lines, "\n"))
		}
		s, err := h.Status()
		if err != nil {
			t.Fatal(err)
		}
		if alive := slices.IndexFunc(s.Members, func(m api.MemberStatus) bool { return m.State != string(gossip.StateAlive) }); alive >= 0 || len(s.Members) != 3 {
			t.Errorf("%s after the flood: members %+v", h.Name, s.Members)
		}
	}
	if diff := cmp.Diff(before, assignment(t, l.Clients[2:])); diff != "" {
		t.Errorf("clients moved (-before +after):\n%s", diff)
	}
}
