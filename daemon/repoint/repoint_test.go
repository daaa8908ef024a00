package repoint

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
)

func TestRepointer(t *testing.T) {
	t.Parallel()
	table := arp.NewClientTable(1000, time.Hour)
	for i := range 300 {
		table.Learn(testVIP, netip.AddrFrom4([4]byte{198, 18, 1 + byte(i/250), byte(i % 250)}), net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}, time.Unix(500, 0))
	}
	sent := map[netip.Addr]int{}
	var current *gossip.View
	r := New(Config{
		Table:  table,
		VIPs:   served(policy.Hash),
		Send:   fakeSender{repoint: func(vip netip.Addr, c arp.Client) error { sent[c.IP]++; return nil }},
		Logger: quietLog(),
	})
	now := time.Unix(1000, 0)
	step := func() { now = run(r, current, now, repointSpacing) }

	// The first view: this host re-points every known client it owns.
	all := view("h1", "h1", "h2", "h3")
	current = all
	r.plan(all, table.All(), now)
	for range repointRounds + 1 {
		step()
	}
	for _, c := range table.Clients() {
		want := 0
		if policy.Of(policy.Hash).Answers(all, testVIP, c.IP) {
			want = repointRounds
		}
		if sent[c.IP] != want {
			t.Fatalf("first view: client %s got %d packets, want %d", c.IP, sent[c.IP], want)
		}
	}

	// h2 dies: only h2's clients that now fall to h1 are re-pointed.
	clear(sent)
	noH2 := view("h1", "h1", "h3")
	current = noH2
	r.plan(noH2, table.All(), now)
	step()
	moved := 0
	for _, c := range table.Clients() {
		want := 0
		if policy.Of(policy.Hash).Owner(all, testVIP, c.IP) == "h2" && policy.Of(policy.Hash).Answers(noH2, testVIP, c.IP) {
			want = 1
			moved++
		}
		if sent[c.IP] != want {
			t.Fatalf("after h2 died: client %s got %d packets, want %d", c.IP, sent[c.IP], want)
		}
	}
	if moved == 0 {
		t.Fatal("no client moved to h1; the test proves nothing")
	}

	// h2 is back before the other rounds: h1 no longer owns those clients
	// and must stop sending to them.
	current = all
	r.plan(all, table.All(), now)
	step()
	step()
	for ip, n := range sent {
		if n != 1 {
			t.Errorf("client %s got %d packets after it moved back, want 1", ip, n)
		}
	}
	if len(r.pending) != 0 {
		t.Errorf("%d clients still pending", len(r.pending))
	}
}

func TestRepointerSingleAndRace(t *testing.T) {
	t.Parallel()
	table := arp.NewClientTable(1000, time.Hour)
	for i := range 100 {
		table.Learn(testVIP, netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}, time.Unix(500, 0))
	}
	all := view("h1", "h1", "h2", "h3")
	single := policy.Of(policy.Single).Owner(all, testVIP, netip.Addr{})
	var others []string
	for _, h := range []string{"h1", "h2", "h3"} {
		if h != single {
			others = append(others, h)
		}
	}

	// Single mode: the host that takes the VIP over broadcasts, spaced, and
	// sends every known client its requests, for the clients that drop
	// gratuitous ARP.
	for _, self := range others {
		unicast, broadcasts := 0, []time.Time{}
		r := New(Config{
			Table: table, VIPs: served(policy.Single),
			Send: fakeSender{
				repoint:  func(netip.Addr, arp.Client) error { unicast++; return nil },
				announce: func(netip.Addr) error { broadcasts = append(broadcasts, time.Time{}); return nil },
			},
			Logger: quietLog(),
		})
		now := time.Unix(1000, 0)
		r.plan(view(self, "h1", "h2", "h3"), table.All(), now)
		after := view(self, others...) // the single owner died
		r.plan(after, table.All(), now)
		run(r, after, now, 20*repointSpacing)
		owner := policy.Of(policy.Single).Owner(after, testVIP, netip.Addr{})
		want, wantUnicast := 0, 0
		if self == owner {
			want = announceCount + 1                        // and once more when the cluster settles
			wantUnicast = (repointRounds + 1) * table.Len() // once more at the settle
		}
		if len(broadcasts) != want || unicast != wantUnicast {
			t.Errorf("%s (new owner %s): %d broadcasts, %d unicasts; want %d and %d", self, owner, len(broadcasts), unicast, want, wantUnicast)
		}
	}

	// Race mode: when a host is lost, the survivors re-point every client
	// between them, each client once by one survivor.
	got := map[netip.Addr]int{}
	for _, self := range []string{"h1", "h3"} {
		r := New(Config{
			Table: table, VIPs: served(policy.Race),
			Send:   fakeSender{repoint: func(_ netip.Addr, c arp.Client) error { got[c.IP]++; return nil }},
			Logger: quietLog(),
		})
		now := time.Unix(1000, 0)
		r.plan(view(self, "h1", "h2", "h3"), table.All(), now)
		if len(r.pending) != 0 {
			t.Fatalf("race mode re-points %d clients with nobody lost", len(r.pending))
		}
		v := view(self, "h1", "h3")
		r.plan(v, table.All(), now)
		run(r, v, now, repointSpacing)
	}
	for _, c := range table.Clients() {
		if got[c.IP] != 1 {
			t.Fatalf("race mode: client %s re-pointed %d times, want once", c.IP, got[c.IP])
		}
	}
}

// run turns the repointer's loop every tick for d after now, as Run does,
// and returns the time it got to.
func run(r *Repointer, v *gossip.View, now time.Time, d time.Duration) time.Time {
	for end := now.Add(d); now.Before(end); {
		now = now.Add(repointTick)
		r.round(v, now)
	}
	return now
}

// fakeSender records what the repointer sends.
type fakeSender struct {
	repoint  func(netip.Addr, arp.Client) error
	announce func(netip.Addr) error
}

func (f fakeSender) Repoint(vip netip.Addr, c arp.Client) error { return f.repoint(vip, c) }
func (f fakeSender) Announce(vip netip.Addr) error {
	if f.announce == nil {
		return nil
	}
	return f.announce(vip)
}

// servedVIPs is a fixed set of served VIPs.
type servedVIPs []arp.SharedVIP

func (s servedVIPs) VIPs() []arp.SharedVIP { return s }

// served is testVIP, shared by mode m.
func served(m policy.Mode) servedVIPs { return servedVIPs{{Address: testVIP, Policy: policy.Of(m)}} }

// TestRepointerRateOrderConfirm: the packets keep to the rate, the
// (protected) clients seen most recently go first, a client that answers
// gets no more, and one that does not is counted.
func TestRepointerRateOrderConfirm(t *testing.T) {
	t.Parallel()
	table := arp.NewClientTable(1000, time.Hour)
	const n = 40
	ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}) }
	for i := range n { // client i was seen at 500+i: the last is the most recent
		table.Learn(testVIP, ip(i), net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}, time.Unix(500+int64(i), 0))
		table.Protect(testVIP, ip(i))
	}
	var order []netip.Addr
	sent := map[netip.Addr]int{}
	r := New(Config{
		Table: table, VIPs: served(policy.Hash),
		Send: fakeSender{repoint: func(_ netip.Addr, c arp.Client) error {
			order = append(order, c.IP)
			sent[c.IP]++
			return nil
		}},
		Logger: quietLog(), Rate: 10,
	})
	alone := view("h1", "h1") // owns every client
	now := time.Unix(1000, 0)
	r.plan(alone, table.All(), now)
	now = run(r, alone, now, time.Second)
	if len(order) < 9 || len(order) > 11 {
		t.Fatalf("%d packets in 1 s at 10 packets/s", len(order))
	}
	for i, got := range order {
		if want := ip(n - 1 - i); got != want {
			t.Fatalf("packet %d went to %s, want %s (most recently seen first): %v", i, got, want, order)
		}
	}
	st := r.Status()
	if st.Rate != 10 || st.Clients != n || st.Packets != n*repointRounds-len(order) {
		t.Errorf("status %+v: want rate 10, %d clients, %d packets left", st, n, n*repointRounds-len(order))
	}
	if want := time.Duration(st.Packets) * time.Second / 10; st.Remaining != want {
		t.Errorf("status says the round takes %s more, want %s", st.Remaining, want)
	}

	// The most recent client answers its first request: it gets no more.
	table.Learn(testVIP, ip(n-1), net.HardwareAddr{2, 0, 0, 0, 1, byte(n - 1)}, now)
	run(r, alone, now, 30*time.Second)
	if got := sent[ip(n-1)]; got != 1 {
		t.Errorf("the client that answered got %d packets, want 1", got)
	}
	for i := range n - 1 {
		if got := sent[ip(i)]; got != repointRounds {
			t.Errorf("client %s got %d packets, want %d", ip(i), got, repointRounds)
		}
	}
	st = r.Status()
	if st.Confirmed != 1 || st.Unanswered != n-1 || st.Clients != 0 || st.Remaining != 0 {
		t.Errorf("status %+v: want 1 confirmed, %d unanswered, idle", st, n-1)
	}
	if want := (Results{Confirmed: 1, Unanswered: n - 1}); st.ByVIP[testVIP] != want || len(st.ByVIP) != 1 {
		t.Errorf("by VIP %v, want %s: %+v", st.ByVIP, testVIP, want)
	}
}

// TestRepointerProtectedFirst: clients with evidence of a real machine go
// before those without, however recent, and of those the one known longest
// goes first: after a spoofing flood the queue is full of recent ones.
func TestRepointerProtectedFirst(t *testing.T) {
	t.Parallel()
	table := arp.NewClientTable(1000, time.Hour)
	ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}) }
	for i := range 40 {
		table.Learn(testVIP, ip(i), net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}, time.Unix(500+int64(i), 0))
	}
	real := []netip.Addr{ip(3), ip(2), ip(1)} // most recent first
	for _, a := range real {
		table.Protect(testVIP, a)
	}
	var order []netip.Addr
	r := New(Config{
		Table: table, VIPs: served(policy.Hash), Logger: quietLog(), Rate: 4,
		Send: fakeSender{repoint: func(_ netip.Addr, c arp.Client) error { order = append(order, c.IP); return nil }},
	})
	alone := view("h1", "h1")
	now := time.Unix(1000, 0)
	r.plan(alone, table.All(), now)
	run(r, alone, now, time.Second)
	if len(order) < 4 {
		t.Fatalf("%d packets in 1 s at 4 packets/s", len(order))
	}
	if want := append(real, ip(0)); !slices.Equal(want, order[:4]) {
		t.Errorf("first packets went to %v, want %v", order[:4], want)
	}
}

// TestRepointerRefuted: after this host refutes its death, it re-asserts
// every client it owns, and only those, though its view did not change.
func TestRepointerRefuted(t *testing.T) {
	t.Parallel()
	table := arp.NewClientTable(1000, time.Hour)
	for i := range 60 {
		table.Learn(testVIP, netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}, time.Unix(500, 0))
	}
	all := view("h1", "h1", "h2", "h3")
	var mu sync.Mutex
	sent := map[netip.Addr]int{}
	r := New(Config{
		Table: table, VIPs: served(policy.Hash),
		Send: fakeSender{repoint: func(_ netip.Addr, c arp.Client) error {
			mu.Lock()
			defer mu.Unlock()
			sent[c.IP]++
			return nil
		}},
		Logger: quietLog(),
	})
	r.last = all // the view this host already acted on
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	r.Refuted()
	owned := 0
	for _, c := range table.Clients() {
		if policy.Of(policy.Hash).Answers(all, testVIP, c.IP) {
			owned++
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		total := 0
		for _, n := range sent {
			total += n
		}
		mu.Unlock()
		if total >= owned*reassertRounds || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if owned == 0 {
		t.Fatal("h1 owns no client; the test proves nothing")
	}
	for _, c := range table.Clients() {
		want := 0
		if policy.Of(policy.Hash).Answers(all, testVIP, c.IP) {
			want = reassertRounds
		}
		if sent[c.IP] != want {
			t.Errorf("client %s got %d packets after the refutation, want %d", c.IP, sent[c.IP], want)
		}
	}
}

// TestRepointerPeriodic: every Reassert, each client this host owns gets one
// packet, though nothing changed.
func TestRepointerPeriodic(t *testing.T) {
	t.Parallel()
	table := arp.NewClientTable(1000, time.Hour)
	for i := range 30 {
		table.Learn(testVIP, netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}, time.Unix(500, 0))
	}
	all := view("h1", "h1", "h2")
	var mu sync.Mutex
	sent := map[netip.Addr]int{}
	r := New(Config{
		Table: table, VIPs: served(policy.Hash),
		Send: fakeSender{repoint: func(_ netip.Addr, c arp.Client) error {
			mu.Lock()
			defer mu.Unlock()
			sent[c.IP]++
			return nil
		}},
		Logger: quietLog(), Reassert: 300 * time.Millisecond, ReassertRate: 1000,
	})
	r.last = all
	var owned []netip.Addr
	for _, c := range table.Clients() {
		if policy.Of(policy.Hash).Answers(all, testVIP, c.IP) {
			owned = append(owned, c.IP)
		}
	}
	if len(owned) == 0 {
		t.Fatal("h1 owns no client; the test proves nothing")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	start := time.Now()
	go func() { done <- r.Run(ctx) }()
	// Two rounds at least, each client of its own once per round: wait
	// for them rather than sleep for five rounds' time (a loaded machine
	// may run fewer), but not for ever: without a periodic round, none
	// comes.
	least := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := sent[owned[0]]
		for _, ip := range owned {
			n = min(n, sent[ip])
		}
		return n
	}
	for least() < 2 && time.Since(start) < 15*time.Second {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, c := range table.Clients() {
		n := sent[c.IP]
		if !slices.Contains(owned, c.IP) {
			if n != 0 {
				t.Errorf("client %s of h2 got %d packets", c.IP, n)
			}
			continue
		}
		if n < 2 {
			t.Errorf("client %s got %d packets in %s, re-asserted every 300 ms", c.IP, n, time.Since(start).Round(time.Millisecond))
		}
	}
}

type progressLog []uint32

func (p *progressLog) Repointed(d uint32) { *p = append(*p, d) }

// TestRepointerReportsDone: the repointer reports a view once every client
// it gave this host has had its packets, not before; at a slow rate, that
// takes as long as the rate says.
func TestRepointerReportsDone(t *testing.T) {
	t.Parallel()
	table := arp.NewClientTable(1000, time.Hour)
	for i := range 60 {
		table.Learn(testVIP, netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}, time.Unix(500, 0))
	}
	var reports progressLog
	r := New(Config{
		Table: table, VIPs: served(policy.Hash), Logger: quietLog(), Rate: 20, Progress: &reports,
		Send: fakeSender{repoint: func(netip.Addr, arp.Client) error { return nil }},
	})
	now := time.Unix(1000, 0)
	all := view("h1", "h1", "h2")
	r.plan(all, table.All(), now)
	for start := now; len(reports) == 0 && now.Sub(start) < time.Minute; {
		now = run(r, all, now, repointTick)
	}
	if len(reports) != 1 || reports[0] != ViewDigest(all) {
		t.Fatalf("first view: reports %v, want [%d]", reports, ViewDigest(all))
	}
	// h2 drains: h1 takes its clients, 3 packets each at 20 a second.
	alone := view("h1", "h1")
	moved := 0
	for _, c := range table.Clients() {
		if policy.Of(policy.Hash).Moved(all, alone, testVIP, c.IP) {
			moved++
		}
	}
	if moved < 10 {
		t.Fatalf("only %d clients move: the test needs more", moved)
	}
	start := now
	r.plan(alone, table.All(), now)
	for len(reports) == 1 && now.Sub(start) < time.Minute {
		now = run(r, alone, now, repointTick)
	}
	if len(reports) != 2 || reports[1] != ViewDigest(alone) {
		t.Fatalf("after h2 drains: reports %v, want a second, %d", reports, ViewDigest(alone))
	}
	if took, least := now.Sub(start), time.Duration(moved*repointRounds-1)*time.Second/20; took < least {
		t.Errorf("%d clients reported re-pointed after %s, want at least %s at 20 packets/s", moved, took, least)
	}
}
