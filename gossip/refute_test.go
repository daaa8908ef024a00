package gossip

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/arpshare/arpshare/internal/clock/clocktest"
)

// TestRefutedDeath cuts m1 off until both peers count its death, then plugs
// it back: the peers' joins (recheckDead) show m1 its death, memberlist
// refutes it, and m1's OnRefute is called, from memberlist's state.
func TestRefutedDeath(t *testing.T) {
	t.Parallel()
	nodes := startMemCluster(t, 3)
	waitAllAlive(t, nodes)
	m1 := nodes[0]
	before := m1.refutes.Load()
	m1.tr.Cut(true)
	for _, m := range nodes[1:] {
		waitMemView(t, m, "m1 dead", func(v *View) bool { return states(v)["m1"] == StateDead })
	}
	m1.tr.Cut(false)
	waitFor(t, "m1, taken for dead by both peers and back, refuting", func() bool { return m1.refutes.Load() != before },
		func() string { return fmt.Sprintf("m2 sees %v", states(nodes[1].c.View())) })
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
	from  []string // each message's from field, or ""
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if strings.HasPrefix(r.Message, "memberlist: ") { // not the writer's own word on suppressed lines
		h.count[r.Level]++
	}
	h.msgs = append(h.msgs, r.Message)
	from := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "from" {
			from = a.Value.String()
		}
		return true
	})
	h.from = append(h.from, from)
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
// as a refutation. The lines it logs are limited, the rest counted: on the
// cluster's clock, which stands still here, no more than the budget's burst.
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
		Clock:    clocktest.New(epoch),
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
	// Two labels that are the text memberlist logs when it refutes, and the
	// cluster's own label with, unencrypted, the user message by which a
	// peer says it counted this host dead (tellCounted).
	const sent = 300
	accounted := func() int { return h.n(slog.LevelError) + int(c.logs.Suppressed()["error"]) }
	userMsg := append([]byte{8}, countedDead...)
	for _, d := range []struct{ label, body string }{
		{"Refuting a suspect message", "from a stranger"},
		{"Refuting a dead message", "from a stranger"},
		{"test", string(userMsg)},
	} {
		datagram := append([]byte{244, byte(len(d.label))}, d.label...)
		datagram = append(datagram, d.body...)
		for range sent / 3 {
			// One at a time, each read (logged or suppressed) before the
			// next: however slowly memberlist reads, none overflows the
			// socket's buffer.
			before := accounted()
			if _, err := conn.Write(datagram); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "memberlist reading a datagram", func() bool { return accounted() > before }, func() string {
				return fmt.Sprintf("%d of %d datagrams' lines logged or suppressed", accounted(), sent)
			})
		}
	}
	if n := refuted.Load(); n != 0 {
		t.Errorf("a stranger's label made the member refute %d times", n)
	}
	if n, most := h.n(slog.LevelError), logBudgets[slog.LevelError].burst; n > most {
		t.Errorf("%d error lines logged for %d datagrams, want at most %d", n, sent, most)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, m := range h.msgs {
		if strings.Contains(m, "unacceptable label") {
			// The datagrams were memberlist's to refuse, and the line
			// says where they came from in a field.
			if h.from[i] != conn.LocalAddr().String() {
				t.Errorf("%q logged from %q, want from=%s", m, h.from[i], conn.LocalAddr())
			}
			return
		}
	}
	t.Errorf("memberlist never logged the datagrams it refused: %q", h.msgs)
}

// TestCountedDeathMessage: only the exact message counts.
func TestCountedDeathMessage(t *testing.T) {
	t.Parallel()
	calls := 0
	c := NewCluster(ClusterConfig{Name: "h1", OnRefute: func() { calls++ }, Logger: slog.New(slog.DiscardHandler)})
	for _, b := range [][]byte{nil, []byte("arpshare"), append(slices.Clone(countedDead), 0)} {
		delegate{c}.NotifyMsg(b)
	}
	if calls != 0 {
		t.Errorf("other messages refuted %d times", calls)
	}
	delegate{c}.NotifyMsg(countedDead)
	if calls != 1 {
		t.Errorf("the message refuted %d times, want 1", calls)
	}
}

// TestCountedDeathTold: a member back from a death that m2 counted is told
// so by m2 (a member that refuted by gossip before any join would not
// otherwise learn that its clients were moved); see TestCountedDeathOwed
// for who is owed a notice, and for how long.
func TestCountedDeathTold(t *testing.T) {
	t.Parallel()
	nodes := startMemCluster(t, 3)
	waitAllAlive(t, nodes)
	m1, m2 := nodes[0], nodes[1]
	copyOf := func(m *memNode) *memberlist.Node {
		self, _ := m.c.View().Member(m.c.cfg.Name)
		meta, err := self.Meta.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return &memberlist.Node{Name: self.Name, Addr: self.Addr.Addr().AsSlice(), Port: self.Addr.Port(), Meta: meta}
	}
	// m1's death reported, counted, and m1 back (as m2's memberlist would
	// report a refutation it got by gossip).
	before := m1.refutes.Load()
	events{m2.c}.NotifyLeave(copyOf(m1))
	m2.c.endHold("m1")
	waitMemView(t, m2, "m1 dead", func(v *View) bool { return states(v)["m1"] == StateDead })
	events{m2.c}.NotifyJoin(copyOf(m1))
	waitFor(t, "m1, back from a death m2 counted, told so", func() bool { return m1.refutes.Load() != before },
		func() string { return "no refutation" })
}
