package gossip

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestRefutedDeath cuts m1 off until both peers count its death, then plugs
// it back: the peers' joins (recheckDead) show m1 its death, memberlist
// refutes it, and m1's OnRefute is called, from memberlist's state.
func TestRefutedDeath(t *testing.T) {
	t.Parallel()
	nodes := startMemCluster(t, 3)
	for _, m := range nodes {
		waitMemView(t, m, "three alive members", func(v *View) bool {
			s := states(v)
			return len(s) == 3 && s["m1"] == StateAlive && s["m2"] == StateAlive && s["m3"] == StateAlive
		})
	}
	m1 := nodes[0]
	before := m1.refutes.Load()
	m1.tr.Cut(true)
	for _, m := range nodes[1:] {
		waitMemView(t, m, "m1 dead", func(v *View) bool { return states(v)["m1"] == StateDead })
	}
	m1.tr.Cut(false)
	deadline := time.Now().Add(15 * time.Second)
	for m1.refutes.Load() == before {
		if time.Now().After(deadline) {
			t.Fatalf("m1, taken for dead by both peers and back, never refuted; m2 sees %v", states(nodes[1].c.View()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := m1.c.refutes.Load(); n == 0 {
		t.Errorf("OnRefute called but the refutation is not counted")
	}
	waitMemView(t, nodes[1], "m1 alive again", func(v *View) bool { return states(v)["m1"] == StateAlive })
}

// TestNotifyMerge: only a peer's state that lists this host as failed is a
// refutation.
func TestNotifyMerge(t *testing.T) {
	t.Parallel()
	calls := 0
	c := NewCluster(ClusterConfig{Name: "h1", OnRefute: func() { calls++ }, Logger: slog.New(slog.DiscardHandler)})
	for _, tc := range []struct {
		peers []*memberlist.Node
		want  int
	}{
		{[]*memberlist.Node{{Name: "h1", State: memberlist.StateAlive}, {Name: "h2", State: memberlist.StateDead}}, 0},
		{[]*memberlist.Node{{Name: "h1", State: memberlist.StateSuspect}}, 1},
		{[]*memberlist.Node{{Name: "h2", State: memberlist.StateAlive}, {Name: "h1", State: memberlist.StateDead}}, 1},
		{[]*memberlist.Node{{Name: "h1", State: memberlist.StateLeft}}, 1},
	} {
		calls = 0
		if err := (merges{c}).NotifyMerge(tc.peers); err != nil {
			t.Fatal(err)
		}
		if calls != tc.want {
			t.Errorf("NotifyMerge(%v): OnRefute called %d times, want %d", tc.peers, calls, tc.want)
		}
	}
	c.left.Store(true)
	calls = 0
	merges{c}.NotifyMerge([]*memberlist.Node{{Name: "h1", State: memberlist.StateDead}})
	if calls != 0 {
		t.Error("a host that left refuted its leaving")
	}
}

// countingHandler counts log records by level, and keeps their messages.
type countingHandler struct {
	mu    sync.Mutex
	count map[slog.Level]int
	msgs  []string
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.count[r.Level]++
	h.msgs = append(h.msgs, r.Message)
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

func (h *countingHandler) n(level slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count[level]
}

// TestStrangerLabel sends a member, over real UDP on loopback, datagrams
// whose label header is the text memberlist logs when it refutes: memberlist
// logs the label before any key check, and nothing in that line may count
// as a refutation. The lines it logs are limited, the rest counted.
func TestStrangerLabel(t *testing.T) {
	t.Parallel()
	lo := netip.MustParseAddr("127.0.0.1")
	bind := netip.AddrPortFrom(lo, freePort(t))
	h := &countingHandler{count: map[slog.Level]int{}}
	var refuted atomic.Int32
	c := NewCluster(ClusterConfig{
		Name: "n1", Bind: bind, Peers: []netip.AddrPort{bind}, Keys: [][]byte{make([]byte, 32)}, Label: "test",
		ProbeInterval: 200 * time.Millisecond, ProbeTimeout: 100 * time.Millisecond,
		SuspicionMult: 3, GossipInterval: 100 * time.Millisecond, RejoinInterval: time.Second,
		Meta:     func() Meta { return Meta{Version: MetaVersion, Algorithm: Algorithm, Weight: 1} },
		OnRefute: func() { refuted.Add(1) },
		Logger:   slog.New(h),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	defer func() { cancel(); <-done }()
	<-c.Ready()

	conn, err := net.Dial("udp", bind.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const sent = 300
	for _, label := range []string{"Refuting a suspect message", "Refuting a dead message"} {
		datagram := append([]byte{244, byte(len(label))}, label...)
		datagram = append(datagram, "from a stranger"...)
		for range sent / 2 {
			if _, err := conn.Write(datagram); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Microsecond) // within the socket's buffer
		}
	}
	// Every datagram is logged or suppressed once memberlist read it.
	start := time.Now()
	deadline := start.Add(15 * time.Second)
	for h.n(slog.LevelError)+int(c.logs.Suppressed()["error"]) < sent {
		if time.Now().After(deadline) {
			t.Fatalf("memberlist logged %d and suppressed %d of %d datagrams' lines", h.n(slog.LevelError), c.logs.Suppressed()["error"], sent)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := refuted.Load(); n != 0 {
		t.Errorf("a stranger's label made the member refute %d times", n)
	}
	budget := logBudgets[slog.LevelError]
	if n, most := h.n(slog.LevelError), budget.burst+int(budget.rate*time.Since(start).Seconds())+2; n > most {
		t.Errorf("%d error lines logged for %d datagrams, want at most %d", n, sent, most)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.msgs {
		if strings.Contains(m, "unacceptable label") {
			return // the datagrams were memberlist's to refuse
		}
	}
	t.Errorf("memberlist never logged the datagrams it refused: %q", h.msgs)
}
