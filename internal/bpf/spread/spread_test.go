package spread

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/gossip"
)

// fakeProgram is the kernel program, in memory.
type fakeProgram struct {
	tables   map[netip.Addr][]Slot
	routers  map[netip.Addr][][6]byte
	attached []int
	sets     int // SetTable calls
	peers    [][6]byte
	removed  []netip.Addr
}

func newFake() *fakeProgram {
	return &fakeProgram{tables: map[netip.Addr][]Slot{}, routers: map[netip.Addr][][6]byte{}}
}

func (f *fakeProgram) Attach(i int) error { f.attached = append(f.attached, i); return nil }
func (f *fakeProgram) Detach(i int) error {
	f.attached = slices.DeleteFunc(f.attached, func(x int) bool { return x == i })
	return nil
}
func (f *fakeProgram) SetTable(v netip.Addr, t []Slot) error { f.tables[v] = t; f.sets++; return nil }
func (f *fakeProgram) SetRouters(v netip.Addr, m [][6]byte) error {
	f.routers[v] = slices.Clone(m)
	return nil
}
func (f *fakeProgram) SetPeers(m [][6]byte) error { f.peers = slices.Clone(m); return nil }
func (f *fakeProgram) RemoveVIP(v netip.Addr) error {
	delete(f.tables, v)
	delete(f.routers, v)
	f.removed = append(f.removed, v)
	return nil
}
func (f *fakeProgram) Outcomes() (map[string]uint64, error) {
	return map[string]uint64{"spread": 3}, nil
}
func (f *fakeProgram) Close() error { return nil }

type source struct {
	served  []RoutedVIP
	clients []arp.Client
}

func (s *source) Routed() []RoutedVIP { return s.served }
func (s *source) MAC(vip, ip netip.Addr) ([6]byte, bool) {
	for _, c := range s.clients {
		if c.VIP == vip && c.IP == ip && len(c.MAC) == 6 {
			return [6]byte(c.MAC), true
		}
	}
	return [6]byte{}, false
}

func macOf(name string) [6]byte { return [6]byte{0x02, 0, 0, 0, 0, name[0]} }

func member(name string, state gossip.State) gossip.Member {
	m := macOf(name)
	return gossip.Member{Name: name, State: state, Meta: gossip.Meta{
		Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: 1,
		VIPs: []netip.Addr{vip4}, MACs: []string{net.HardwareAddr(m[:]).String()},
	}}
}

var routerIP = netip.MustParseAddr("198.18.0.254")

func newTest(t *testing.T) (*Spreader, *fakeProgram, *source, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	src := &source{served: []RoutedVIP{{VIP: vip4, Name: "web", Interface: "lo", Routers: []netip.Addr{routerIP}}}}
	f := newFake()
	s := New("a", 0, src, slog.New(slog.NewTextHandler(&logs, nil)))
	s.load = func(int) (program, error) { return f, nil }
	return s, f, src, &logs
}

func count(table []Slot) map[[6]byte]int {
	n := map[[6]byte]int{}
	for _, s := range table {
		n[s.MAC]++
	}
	return n
}

// TestSpreaderFollowsView checks that the table is the eligible hosts', is
// made again only when they change, and keeps the slots of hosts that stay.
func TestSpreaderFollowsView(t *testing.T) {
	t.Parallel()
	s, f, _, _ := newTest(t)
	s.Update(gossip.NewView("a", []gossip.Member{member("a", gossip.StateAlive), member("b", gossip.StateAlive), member("c", gossip.StateAlive)}, 0))
	first := f.tables[vip4]
	if n := count(first); len(n) != 3 {
		t.Fatalf("table of %d hosts, want 3: %v", len(n), n)
	}
	for _, sl := range first {
		if sl.Local != (sl.MAC == macOf("a")) {
			t.Fatal("slots of this host not marked local, or others marked")
		}
	}
	if len(f.attached) != 1 {
		t.Errorf("attached to %v, want lo", f.attached)
	}
	sets := f.sets
	s.Update(gossip.NewView("a", []gossip.Member{member("a", gossip.StateAlive), member("b", gossip.StateAlive), member("c", gossip.StateAlive)}, 0))
	if f.sets != sets {
		t.Error("the same hosts made the table again")
	}
	s.Update(gossip.NewView("a", []gossip.Member{member("a", gossip.StateAlive), member("b", gossip.StateAlive), member("c", gossip.StateDead)}, 0))
	after := f.tables[vip4]
	if n := count(after); len(n) != 2 || n[macOf("c")] != 0 {
		t.Fatalf("after c died: %v", n)
	}
	for i := range first {
		if first[i].MAC != macOf("c") && after[i] != first[i] {
			t.Fatalf("slot %d of a live host moved", i)
		}
	}
	if st := s.Status(); !st.Active || len(st.VIPs) != 1 || !slices.Equal(st.VIPs[0].Hosts, []string{"a", "b"}) {
		t.Errorf("status %+v", st)
	}
}

// TestSpreaderLearnsRouters checks that a router's MAC comes from the
// client table, that one with a host's MAC is refused, and that a VIP no
// longer served is taken out.
func TestSpreaderLearnsRouters(t *testing.T) {
	t.Parallel()
	s, f, src, logs := newTest(t)
	v := gossip.NewView("a", []gossip.Member{member("a", gossip.StateAlive), member("b", gossip.StateAlive)}, 0)
	s.Update(v)
	if len(f.routers[vip4]) != 0 {
		t.Fatalf("routers %v before the router was seen", f.routers[vip4])
	}
	if st := s.Status(); st.VIPs[0].Routers[routerIP.String()] != "" {
		t.Errorf("router has a MAC before it was seen: %v", st.VIPs[0].Routers)
	}
	rmac := net.HardwareAddr{0x02, 0xee, 0, 0, 0, 1}
	src.clients = []arp.Client{
		{VIP: vip4, IP: routerIP, MAC: rmac},
		{VIP: vip4, IP: netip.MustParseAddr("198.18.0.101"), MAC: net.HardwareAddr{0x02, 0xcc, 0, 0, 0, 1}},
	}
	s.Update(nil)
	if got := f.routers[vip4]; len(got) != 1 || got[0] != [6]byte(rmac) {
		t.Fatalf("routers %v, want %s", got, rmac)
	}
	if !strings.Contains(logs.String(), "router seen") {
		t.Error("no log line for the router seen")
	}
	// A router with a host's MAC would send flows in a circle.
	b := macOf("b")
	src.clients[0].MAC = b[:]
	s.Update(nil)
	if got := f.routers[vip4]; len(got) != 0 {
		t.Errorf("router with a host's MAC spread: %v", got)
	}
	src.served = nil
	s.Update(nil)
	if !slices.Equal(f.removed, []netip.Addr{vip4}) || len(f.attached) != 0 {
		t.Errorf("VIP without routers: removed %v, attached %v", f.removed, f.attached)
	}
}

// TestSpreaderWithoutProgram checks the fallback: one warning, and status
// says why.
func TestSpreaderWithoutProgram(t *testing.T) {
	t.Parallel()
	s, _, _, logs := newTest(t)
	s.load = func(int) (program, error) { return nil, errors.New("operation not permitted") }
	for range 3 {
		s.Update(nil)
	}
	if n := strings.Count(logs.String(), "spreading routed clients unavailable"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, logs)
	}
	st := s.Status()
	if !st.Configured || st.Active || !strings.Contains(st.Error, "not permitted") || !strings.HasPrefix(st.Summary(), "UNAVAILABLE") {
		t.Errorf("status %+v, summary %q", st, st.Summary())
	}
	if got := fmt.Sprint(New("a", 0, &source{}, slog.New(slog.DiscardHandler)).Status().Summary()); !strings.HasPrefix(got, "not configured") {
		t.Errorf("without routers: %q", got)
	}
}

// gather returns each metric's samples from c: name -> value, summed over
// labels, and how many samples.
func gather(t *testing.T, c prometheus.Collector) (map[string]float64, map[string]int) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values, samples := map[string]float64{}, map[string]int{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			values[mf.GetName()] += m.GetGauge().GetValue() + m.GetCounter().GetValue()
			samples[mf.GetName()]++
		}
	}
	return values, samples
}

// TestMetrics checks that the fallback shows in arpshare_spread_available,
// and that a host without routers exports nothing.
func TestMetrics(t *testing.T) {
	t.Parallel()
	s, _, _, _ := newTest(t)
	s.load = func(int) (program, error) { return nil, errors.New("no tcx") }
	s.Update(nil)
	if v, n := gather(t, s.Collector()); n[MetricAvailable] != 1 || v[MetricAvailable] != 0 {
		t.Errorf("without the program: %s = %v (%d samples), want 0", MetricAvailable, v[MetricAvailable], n[MetricAvailable])
	}
	ok, _, _, _ := newTest(t)
	ok.Update(gossip.NewView("a", []gossip.Member{member("a", gossip.StateAlive)}, 0))
	v, n := gather(t, ok.Collector())
	if v[MetricAvailable] != 1 || n[MetricPackets] != len(outcomeNames) || v[MetricPackets] != 3 || v[MetricHosts] != 1 {
		t.Errorf("with the program: %v %v", v, n)
	}
	if _, n := gather(t, New("a", 0, &source{}, slog.New(slog.DiscardHandler)).Collector()); len(n) != 0 {
		t.Errorf("without routers: %v", n)
	}
}

// TestSpreaderMarksMoves checks that the slots that come to this host from
// a live host carry that host as the one to hand open connections to: on
// start (a host joining takes slots from the others) and when a host
// drains; and that a dead host is handed nothing.
func TestSpreaderMarksMoves(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	src := &source{served: []RoutedVIP{{VIP: vip4, Name: "web", Interface: "lo", Routers: []netip.Addr{routerIP}}}}
	f := newFake()
	s := New("c", time.Minute, src, slog.New(slog.NewTextHandler(&logs, nil)))
	s.load = func(int) (program, error) { return f, nil }
	now := time.Hour
	s.now = func() time.Duration { return now }
	alive := func(name string) gossip.Member { return member(name, gossip.StateAlive) }
	draining := func(name string) gossip.Member { m := alive(name); m.Meta.Draining = true; return m }

	s.Update(gossip.NewView("c", []gossip.Member{alive("a"), alive("b"), alive("c")}, 0))
	joined := f.tables[vip4]
	marked := 0
	for _, sl := range joined {
		switch {
		case !sl.Local && sl.Prev != [6]byte{}:
			t.Fatal("another host's slot marked")
		case sl.Local && (sl.Prev != macOf("a") && sl.Prev != macOf("b") || sl.Deadline != now+time.Minute):
			t.Fatalf("joining: a slot taken over is not marked with its host: %+v", sl)
		case sl.Local:
			marked++
		}
	}
	if marked == 0 {
		t.Fatal("joining host got no slots")
	}
	now += 10 * time.Second
	s.Update(gossip.NewView("c", []gossip.Member{draining("a"), alive("b"), alive("c")}, 0))
	drained := f.tables[vip4]
	for i, sl := range drained {
		switch {
		case joined[i].Local && (sl.Prev != joined[i].Prev || sl.Deadline != joined[i].Deadline):
			t.Fatalf("slot %d: a running mark changed: %+v, was %+v", i, sl, joined[i])
		case !joined[i].Local && sl.Local && (sl.Prev != macOf("a") || sl.Deadline != now+time.Minute):
			t.Fatalf("slot %d from drained a: %+v", i, sl)
		case sl.WasLocal:
			t.Fatalf("slot %d marked as moved away, but this host lost none: %+v", i, sl)
		}
	}
	// This host drains: every slot it had moves away, marked so.
	now += 10 * time.Second
	s.Update(gossip.NewView("c", []gossip.Member{draining("a"), alive("b"), draining("c")}, 0))
	for i, sl := range f.tables[vip4] {
		if drained[i].Local != (sl.WasLocal && sl.Deadline == now+time.Minute) || sl.Local {
			t.Fatalf("slot %d after this host drained: %+v, was %+v", i, sl, drained[i])
		}
	}
	s.Update(gossip.NewView("c", []gossip.Member{member("a", gossip.StateDead), member("b", gossip.StateDead), alive("c")}, 0))
	for _, sl := range f.tables[vip4] {
		if sl.Prev != [6]byte{} {
			t.Fatalf("a slot is handed to a dead host: %+v", sl)
		}
	}
	if len(f.peers) != 3 {
		t.Errorf("peers %x, want the three hosts' MACs", f.peers)
	}
}

// TestSpreaderMarksJoinAfterLoneTable checks that a host whose first
// tables had no other host (it starts before gossip brings it the others,
// and is not eligible yet, or is for a moment alone) still marks the slots
// it takes from the others when they come, as a host joining does; and
// that the slots a host that was alone gives away are marked as moved.
func TestSpreaderMarksJoinAfterLoneTable(t *testing.T) {
	t.Parallel()
	alive := func(name string) gossip.Member { return member(name, gossip.StateAlive) }
	for _, first := range [][]gossip.Member{nil, {alive("c")}} {
		src := &source{served: []RoutedVIP{{VIP: vip4, Name: "web", Interface: "lo", Routers: []netip.Addr{routerIP}}}}
		f := newFake()
		s := New("c", time.Minute, src, slog.New(slog.DiscardHandler))
		s.load = func(int) (program, error) { return f, nil }
		now := time.Hour
		s.now = func() time.Duration { return now }
		s.Update(gossip.NewView("c", first, 0))
		if got := len(s.vips[vip4].hosts); got != len(first) {
			t.Fatalf("first view %d members: table of %d hosts", len(first), got)
		}
		now += time.Second
		s.Update(gossip.NewView("c", []gossip.Member{alive("a"), alive("b"), alive("c")}, 0))
		marked, moved := 0, 0
		for i, sl := range f.tables[vip4] {
			switch {
			case sl.Local && (sl.Prev != macOf("a") && sl.Prev != macOf("b") || sl.Deadline != now+time.Minute):
				t.Fatalf("first view %d members: slot %d taken over is not marked with its host: %+v", len(first), i, sl)
			case sl.Local:
				marked++
			case sl.WasLocal != (len(first) == 1):
				t.Fatalf("first view %d members: slot %d given away: %+v", len(first), i, sl)
			case sl.WasLocal:
				moved++
			}
		}
		if marked == 0 || marked+moved != Slots && len(first) == 1 {
			t.Errorf("first view %d members: %d slots taken over, %d marked as moved away", len(first), marked, moved)
		}
	}
}

// TestSpreaderRunTakesViews checks that a view handed over by ViewChanged
// is acted on by Run, not by the caller.
func TestSpreaderRunTakesViews(t *testing.T) {
	t.Parallel()
	s, f, _, _ := newTest(t)
	s.ViewChanged(gossip.NewView("a", []gossip.Member{member("a", gossip.StateAlive), member("b", gossip.StateAlive)}, 0))
	if f.sets != 0 {
		t.Fatal("ViewChanged made the table itself")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := s.Status()
		if len(st.VIPs) == 1 && len(st.VIPs[0].Hosts) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Run did not take the view: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); st.Active {
		t.Error("Run ended without unloading the program")
	}
}
