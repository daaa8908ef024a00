package gossip

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arpshare/arpshare/gossip/gossiptest"
	"github.com/arpshare/arpshare/internal/clock"
	"github.com/arpshare/arpshare/internal/clock/clocktest"
)

// memNode is a cluster member on an in-memory network.
type memNode struct {
	c       *Cluster
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	changes []*View // every view OnChange was given
	tr      *gossiptest.Transport
	refutes atomic.Int32 // OnRefute calls
}

// startMemCluster starts n members named m1..mn on one in-memory network,
// each with the others as peers. No socket is opened.
func startMemCluster(t *testing.T, n int) []*memNode {
	t.Helper()
	network := gossiptest.NewNetwork()
	var transports []*gossiptest.Transport
	var binds []netip.AddrPort
	for range n {
		tr := network.NewTransport()
		transports, binds = append(transports, tr), append(binds, tr.Addr())
	}
	var nodes []*memNode
	for i, tr := range transports {
		nodes = append(nodes, startMemNode(t, fmt.Sprintf("m%d", i+1), tr, binds, nil))
	}
	return nodes
}

// startMemNode starts a member on tr's network with the given peers and
// clock (nil: the real one), until the test ends.
func startMemNode(t *testing.T, name string, tr *gossiptest.Transport, peers []netip.AddrPort, clk clock.Clock) *memNode {
	t.Helper()
	m := &memNode{done: make(chan struct{}), tr: tr}
	m.c = NewCluster(ClusterConfig{
		Name: name, Bind: tr.Addr(), Peers: peers, Label: "test",
		ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond,
		SuspicionMult: 2, GossipInterval: 50 * time.Millisecond, RejoinInterval: time.Second,
		Meta: func() Meta {
			return Meta{Version: MetaVersion, Algorithm: Algorithm, Weight: 1, VIPs: []netip.Addr{netip.MustParseAddr("198.18.0.200")}}
		},
		OnChange: func(v *View) {
			m.mu.Lock()
			defer m.mu.Unlock()
			m.changes = append(m.changes, v)
		},
		OnRefute:  func() { m.refutes.Add(1) },
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Transport: tr,
		Clock:     clk,
	})
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() {
		defer close(m.done)
		if err := m.c.Run(ctx); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}()
	t.Cleanup(m.kill)
	return m
}

// ready waits until the member listens.
func (m *memNode) ready(t *testing.T) {
	t.Helper()
	select {
	case <-m.c.Ready():
	case <-m.done:
		t.Fatalf("%s stopped before it was ready", m.c.cfg.Name)
	case <-time.After(patience):
		t.Fatalf("%s never ready", m.c.cfg.Name)
	}
}

// kill stops the member without leaving, as a host that loses power: its
// transport drops what is sent to it from then on.
func (m *memNode) kill() {
	m.cancel()
	<-m.done
}

func (m *memNode) sawChange(cond func(*View) bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, v := range m.changes {
		if cond(v) {
			return true
		}
	}
	return false
}

// TestClusterInMemory forms a cluster of three over memberlist's in-memory
// transport, powers one member off, and watches the two others declare it
// dead and hand the new view to OnChange.
func TestClusterInMemory(t *testing.T) {
	t.Parallel()
	nodes := startMemCluster(t, 3)
	allAlive := func(v *View) bool {
		s := states(v)
		return len(s) == 3 && s["m1"] == StateAlive && s["m2"] == StateAlive && s["m3"] == StateAlive
	}
	for _, m := range nodes {
		m.ready(t)
		waitMemView(t, m, "three alive members", allAlive)
	}
	// Memberlist tells this package when a peer probes this host.
	waitFor(t, "m1 probed", func() bool { return nodes[0].c.probedAt.Load() != 0 }, func() string { return "never" })
	if v := nodes[0].c.View(); v.JoinState() != JoinMember || !v.Quorum() {
		t.Errorf("m1 join state %q quorum %v, want member with quorum", v.JoinState(), v.Quorum())
	}
	before := nodes[0].c.LastChange()

	nodes[2].kill()
	m3Dead := func(v *View) bool {
		s := states(v)
		return s["m3"] == StateDead && s["m1"] == StateAlive && s["m2"] == StateAlive
	}
	var v *View
	for _, m := range nodes[:2] {
		v = waitMemView(t, m, "m3 dead", m3Dead)
		if !m.sawChange(m3Dead) {
			t.Errorf("%s: OnChange never got a view with m3 dead", m.c.cfg.Name)
		}
		if !m.sawChange(allAlive) {
			t.Errorf("%s: OnChange never got the view with all three alive", m.c.cfg.Name)
		}
	}
	if !nodes[0].c.LastChange().After(before) {
		t.Errorf("m1's last view change %v is not after m3 died (before: %v)", nodes[0].c.LastChange(), before)
	}
	// In the view that shows m3 dead and the others alive (a later one may
	// hold a false suspicion of m2 on a loaded machine).
	vip := netip.MustParseAddr("198.18.0.200")
	if e := v.Eligible(vip); len(e) != 2 {
		t.Errorf("eligible after m3 died: %v, want m1 and m2", e)
	}
}

// waitAllAlive waits until every member sees the three members m1-m3
// alive (not necessarily reachable: on a loaded machine, acks come too late
// to count, and the tests that wait for this do not need them).
func waitAllAlive(t *testing.T, nodes []*memNode) {
	t.Helper()
	for _, m := range nodes {
		waitMemView(t, m, "three alive members", func(v *View) bool {
			s := states(v)
			return len(s) == 3 && s["m1"] == StateAlive && s["m2"] == StateAlive && s["m3"] == StateAlive
		})
	}
}

// waitMemView waits until cond holds for the member's view, and returns
// that view.
func waitMemView(t *testing.T, m *memNode, what string, cond func(*View) bool) *View {
	t.Helper()
	var v *View
	waitFor(t, m.c.cfg.Name+": "+what, func() bool {
		v = m.c.View()
		return cond(v)
	}, func() string { return fmt.Sprintf("members %+v", v.Members) })
	return v
}

// TestRejoin: configured peers missing from the cluster are joined again
// every rejoin interval, of the cluster's clock: b was down when a started,
// and comes up naming nobody; only a's rejoin brings them together.
func TestRejoin(t *testing.T) {
	t.Parallel()
	network := gossiptest.NewNetwork()
	ta, tb := network.NewTransport(), network.NewTransport()
	clk := clocktest.New(epoch)
	// b's transport takes no stream yet: a's first join waits for
	// memberlist's TCP timeout, and fails.
	a := startMemNode(t, "a", ta, []netip.AddrPort{tb.Addr()}, clk)
	a.ready(t)
	b := startMemNode(t, "b", tb, nil, nil)
	b.ready(t)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := clk.WaitTickers(ctx, 2); err != nil { // a's loop: poll (and lateness), rejoin
		t.Fatal(err)
	}
	if _, ok := a.c.View().Member("b"); ok {
		t.Fatal("a found b before any rejoin")
	}
	clk.Advance(a.c.cfg.RejoinInterval)
	waitMemView(t, a, "b, joined", func(v *View) bool { return states(v)["b"] == StateAlive })
	waitMemView(t, b, "a, which joined it", func(v *View) bool { return states(v)["a"] == StateAlive })
}

// TestReachInMemory: the check of a member's gossip port goes through the
// configured transport (a socket on an in-memory member's address is
// nobody's, and its refusal made every report of a death count at once):
// a member up takes the connection, one powered off refuses it.
func TestReachInMemory(t *testing.T) {
	t.Parallel()
	nodes := startMemCluster(t, 3)
	waitAllAlive(t, nodes)
	m1 := nodes[0]
	m2, _ := m1.c.View().Member("m2")
	m3, _ := m1.c.View().Member("m3")
	nodes[2].kill()
	// However long memberlist takes to take the connection: the verdict is
	// what is checked, not its time.
	if got := m1.c.reach(m2.Addr, patience); got != reachOpen {
		t.Errorf("m2, up: reach %v, want open", got)
	}
	if got := m1.c.reach(m3.Addr, patience); got != reachClosed {
		t.Errorf("m3, powered off: reach %v, want closed", got)
	}
}
