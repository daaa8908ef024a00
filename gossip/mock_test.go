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

	"github.com/hashicorp/memberlist"

	"github.com/arpshare/arpshare/gossip/gossiptest"
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
		m := &memNode{done: make(chan struct{}), tr: tr}
		m.c = NewCluster(ClusterConfig{
			Name: fmt.Sprintf("m%d", i+1), Bind: binds[i], Peers: binds, Label: "test",
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
		})
		ctx, cancel := context.WithCancel(context.Background())
		m.cancel = cancel
		go func() {
			defer close(m.done)
			if err := m.c.Run(ctx); err != nil {
				t.Errorf("m%d: %v", i+1, err)
			}
		}()
		t.Cleanup(m.kill)
		nodes = append(nodes, m)
	}
	return nodes
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
		select {
		case <-m.c.Ready():
		case <-m.done:
			t.Fatalf("%s stopped before it was ready", m.c.cfg.Name)
		case <-time.After(15 * time.Second):
			t.Fatalf("%s never ready", m.c.cfg.Name)
		}
		waitMemView(t, m, "three alive members", allAlive)
	}
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
	deadline := time.Now().Add(15 * time.Second)
	for {
		v := m.c.View()
		if cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: never saw %s; members %+v", m.c.cfg.Name, what, v.Members)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDeathInDoubtInMemory: a death reported of a member that is up is held
// on an in-memory network too: the check of the member's gossip port goes
// through the transport (a socket on the member's address is nobody's, and
// its refusal made every such report count at once).
func TestDeathInDoubtInMemory(t *testing.T) {
	t.Parallel()
	nodes := startMemCluster(t, 3)
	waitAllAlive(t, nodes)
	m1 := nodes[0]
	m2, _ := m1.c.View().Member("m2")
	// memberlist's own nodes change under its lock: report a copy.
	node2 := &memberlist.Node{Name: "m2", Addr: m2.Addr.Addr().AsSlice(), Port: m2.Addr.Port()}
	events{m1.c}.NotifyLeave(node2)
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if m, _ := m1.c.View().Member("m2"); m.State != StateAlive {
			t.Fatalf("m2, up, shown %s after a false report", m.State)
		}
	}
}
