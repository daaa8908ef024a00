package gossip

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// freePort finds a port free on loopback for both UDP and TCP.
func freePort(t *testing.T) uint16 {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if u, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			u.Close()
			return uint16(port)
		}
	}
	t.Fatal("no free port")
	return 0
}

// heldPort returns a loopback port on which nothing answers, held for the
// whole test: TCP is bound but does not listen (a dial is refused), UDP is
// bound and never read. A port merely closed could be taken meanwhile by a
// parallel test's node, which would then answer (or refuse) a join.
func heldPort(t *testing.T) uint16 {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	port := sa.(*syscall.SockaddrInet4).Port
	u, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return uint16(port)
}

type memState struct {
	mu   sync.Mutex
	mine string
	got  []string
}

// LocalState sends the whole "table" to a joining peer, and says "changes"
// otherwise.
func (s *memState) LocalState(since time.Time) []byte {
	if since.IsZero() {
		return []byte("table of " + s.mine)
	}
	return []byte("changes of " + s.mine)
}
func (s *memState) MergeState(b []byte, _ bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, string(b))
}

type node struct {
	c        *Cluster
	cancel   context.CancelFunc
	done     chan struct{}
	draining bool
	leaving  bool
	mu       sync.Mutex
	state    *memState
}

func startNode(t *testing.T, name string, bind netip.AddrPort, peers []netip.AddrPort, key []byte, label string, more ...[]byte) *node {
	t.Helper()
	n := &node{done: make(chan struct{}), state: &memState{mine: name}}
	n.c = NewCluster(ClusterConfig{
		Name: name, Bind: bind, Peers: peers, Keys: append([][]byte{key}, more...), Label: label,
		ProbeInterval: 200 * time.Millisecond, ProbeTimeout: 100 * time.Millisecond,
		SuspicionMult: 3, GossipInterval: 100 * time.Millisecond, RejoinInterval: time.Second,
		Meta: func() Meta {
			n.mu.Lock()
			defer n.mu.Unlock()
			return Meta{Version: MetaVersion, Algorithm: Algorithm, Weight: 1, Draining: n.draining, Leaving: n.leaving, VIPs: []netip.Addr{netip.MustParseAddr("198.18.0.200")}}
		},
		State:  n.state,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	n.run(t)
	return n
}

// run runs n's cluster until the test ends.
func (n *node) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() {
		defer close(n.done)
		if err := n.c.Run(ctx); err != nil {
			t.Errorf("%s: %v", n.c.cfg.Name, err)
		}
	}()
	t.Cleanup(n.stop)
}

func (n *node) stop() {
	n.cancel()
	<-n.done
}

// waitFor waits until cond holds, for at most patience; then it fails the
// test with what it waited for and what it saw.
func waitFor(t *testing.T, what string, cond func() bool, saw func() string) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never saw %s; saw %s", what, saw())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitView waits until cond holds for the node's view.
func waitView(t *testing.T, n *node, what string, cond func(*View) bool) {
	t.Helper()
	waitFor(t, n.c.cfg.Name+": "+what, func() bool { return cond(n.c.View()) }, func() string {
		v := n.c.View()
		return fmt.Sprintf("join state %q, rejected %q, members %+v", v.JoinState(), v.Rejected, v.Members)
	})
}

func states(v *View) map[string]State {
	m := map[string]State{}
	for _, mem := range v.Members {
		m[mem.Name] = mem.State
	}
	return m
}

func TestCluster(t *testing.T) {
	t.Parallel()
	key := make([]byte, 32)
	lo := netip.MustParseAddr("127.0.0.1")
	var binds []netip.AddrPort
	for range 3 {
		binds = append(binds, netip.AddrPortFrom(lo, freePort(t)))
	}
	var nodes []*node
	for i, b := range binds {
		nodes = append(nodes, startNode(t, fmt.Sprintf("n%d", i+1), b, binds, key, "test"))
	}
	for _, n := range nodes {
		<-n.c.Ready()
		waitView(t, n, "three alive members", func(v *View) bool {
			s := states(v)
			return len(s) == 3 && s["n1"] == StateAlive && s["n2"] == StateAlive && s["n3"] == StateAlive
		})
	}

	// Push-pull shared every host's state.
	n1 := nodes[0]
	n1.state.mu.Lock()
	got := fmt.Sprint(n1.state.got)
	n1.state.mu.Unlock()
	if !strings.Contains(got, "table of n") {
		t.Errorf("n1 merged %s, want a whole table from a peer that joined", got)
	}

	// n3 says it is leaving: the others gossip that they saw it
	// (Meta.Seen), without being asked.
	nodes[2].mu.Lock()
	nodes[2].leaving = true
	nodes[2].mu.Unlock()
	if err := nodes[2].c.UpdateMeta(time.Second); err != nil {
		t.Logf("n3's update not confirmed yet: %v", err)
	}
	waitView(t, nodes[2], "n1 and n2 saw n3 leaving", func(v *View) bool {
		want := LeavingDigest(v, "n3", true)
		m1, _ := v.Member("n1")
		m2, _ := v.Member("n2")
		return want != 0 && m1.Meta.Seen == want && m2.Meta.Seen == want
	})
	nodes[2].mu.Lock()
	nodes[2].leaving = false
	nodes[2].mu.Unlock()
	nodes[2].c.UpdateMeta(time.Second)

	// Metadata changes travel: n2 drains and drops out of the candidates.
	nodes[1].mu.Lock()
	nodes[1].draining = true
	nodes[1].mu.Unlock()
	// The broadcast is confirmed once sent to enough peers, which takes
	// memberlist's time; one not confirmed is sent again (see
	// TestUnconfirmedUpdateIsSentAgain): what counts is that it arrives.
	if err := nodes[1].c.UpdateMeta(time.Second); err != nil {
		t.Logf("n2's update not confirmed yet: %v", err)
	}
	vip := netip.MustParseAddr("198.18.0.200")
	waitView(t, n1, "n2 draining", func(v *View) bool {
		m, _ := v.Member("n2")
		return m.Meta.Draining && len(v.Eligible(vip)) == 2
	})

	// A host that leaves or vanishes is dead (memberlist does not tell
	// which).
	if err := nodes[1].c.Leave(time.Second); err != nil {
		t.Logf("n2's leave not confirmed: %v (then it is found dead)", err)
	}
	nodes[1].stop()
	waitView(t, n1, "n2 gone", func(v *View) bool { return states(v)["n2"] == StateDead })
	nodes[2].stop()
	waitView(t, n1, "n3 dead", func(v *View) bool { return states(v)["n3"] == StateDead })
	if e := n1.c.View().Eligible(vip); len(e) != 1 || e[0].Name != "n1" {
		t.Errorf("eligible after n2 left and n3 died: %v, want only n1", e)
	}
}

func TestClusterRefusesStrangers(t *testing.T) {
	t.Parallel()
	lo := netip.MustParseAddr("127.0.0.1")
	a, b, c := netip.AddrPortFrom(lo, freePort(t)), netip.AddrPortFrom(lo, freePort(t)), netip.AddrPortFrom(lo, freePort(t))
	key, otherKey := make([]byte, 32), make([]byte, 32)
	otherKey[0] = 1
	na := startNode(t, "a", a, []netip.AddrPort{b, c}, key, "test")
	nb := startNode(t, "b", b, []netip.AddrPort{a}, otherKey, "test") // wrong key
	nc := startNode(t, "c", c, []netip.AddrPort{a}, key, "other")     // wrong label
	// Each has tried its peers and been refused: then none took another.
	waitView(t, na, "refused by b and c", func(v *View) bool { return v.Rejected != "" })
	waitView(t, nb, "refused for its key", func(v *View) bool { return strings.Contains(v.Rejected, "gossip key does not match") })
	waitView(t, nc, "refused for its label", func(v *View) bool { return strings.Contains(v.Rejected, "cluster label is not") })
	// Key rotation: d has learned the new key but still speaks the old one,
	// e already speaks the new one; each understands the other.
	d := netip.AddrPortFrom(lo, freePort(t))
	nd := startNode(t, "d", d, nil, key, "test", otherKey)
	ne := startNode(t, "e", netip.AddrPortFrom(lo, freePort(t)), []netip.AddrPort{d}, otherKey, "test", key)
	waitView(t, nd, "e during a key rotation", func(v *View) bool { return states(v)["e"] == StateAlive })
	nd.stop()
	ne.stop()
	for _, n := range []*node{na, nb, nc} {
		if s := states(n.c.View()); len(s) != 1 {
			t.Errorf("%s sees %v, want only itself", n.c.cfg.Name, s)
		}
	}
}

func TestMeta(t *testing.T) {
	t.Parallel()
	m := Meta{Version: MetaVersion, Algorithm: Algorithm, Weight: 2, VIPs: []netip.Addr{netip.MustParseAddr("198.18.0.200")}, MACs: []string{"02:00:00:00:00:01"}}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMeta(b)
	if err != nil || got.Weight != 2 || got.VIPs[0] != m.VIPs[0] || got.MACs[0] != m.MACs[0] {
		t.Errorf("round trip: %+v, %v", got, err)
	}
	for _, bad := range []string{`{"v":2,"a":1}`, `{"v":1,"a":9}`, `not json`} {
		if _, err := DecodeMeta([]byte(bad)); err == nil {
			t.Errorf("DecodeMeta(%s) accepted", bad)
		}
	}
	// An untrusted member is shown but never a candidate.
	v := NewView("a", []Member{
		{Name: "a", State: StateAlive, Meta: m},
		{Name: "b", State: StateAlive, Meta: m, Err: "ownership algorithm 9"},
		{Name: "c", State: StateDead, Meta: m},
	}, 0)
	if e := v.Eligible(m.VIPs[0]); len(e) != 1 || e[0].Name != "a" {
		t.Errorf("eligible = %v, want only a", e)
	}
}

// TestUnconfirmedUpdateIsSentAgain: an update whose broadcast memberlist
// does not confirm (it can drop one, hashicorp/memberlist#263) is sent again
// until one is confirmed.
func TestUnconfirmedUpdateIsSentAgain(t *testing.T) {
	t.Parallel()
	key := make([]byte, 32)
	lo := netip.MustParseAddr("127.0.0.1")
	binds := []netip.AddrPort{netip.AddrPortFrom(lo, freePort(t)), netip.AddrPortFrom(lo, freePort(t))}
	n1 := startNode(t, "n1", binds[0], binds, key, "test")
	n2 := startNode(t, "n2", binds[1], binds, key, "test")
	waitView(t, n1, "n2 alive", func(v *View) bool { return states(v)["n2"] == StateAlive })

	n1.mu.Lock()
	n1.draining = true
	n1.mu.Unlock()
	// Too short for any broadcast: the update is not confirmed.
	if err := n1.c.UpdateMeta(time.Nanosecond); err == nil {
		t.Fatal("an update with a 1 ns timeout was confirmed")
	}
	waitFor(t, "the unconfirmed update sent again and confirmed", func() bool { return !n1.c.unsent.Load() },
		func() string { return "it unconfirmed" })
	waitView(t, n2, "n1 draining", func(v *View) bool {
		m, _ := v.Member("n1")
		return m.Meta.Draining
	})
}

func TestChangesWindow(t *testing.T) {
	t.Parallel()
	for n, want := range map[int]time.Duration{1: 2 * time.Minute, 32: 2 * time.Minute, 33: 4 * time.Minute, 64: 4 * time.Minute, 65: 6 * time.Minute} {
		if got := changesWindow(n); got != want {
			t.Errorf("changesWindow(%d) = %v, want %v", n, got, want)
		}
	}
}
