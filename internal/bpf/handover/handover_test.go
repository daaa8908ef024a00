package handover

import (
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
)

// fakeMap is the kernel map, in memory.
type fakeMap struct {
	entries map[Key]Entry
	usage   map[Key]Usage
	puts    int
}

func (m *fakeMap) Put(k Key, e Entry) error {
	m.entries[k], m.usage[k] = e, Usage{}
	m.puts++
	return nil
}
func (m *fakeMap) Delete(k Key, _ Entry) error { delete(m.entries, k); delete(m.usage, k); return nil }
func (m *fakeMap) Usage(k Key, _ Entry) (Usage, error) {
	if _, ok := m.entries[k]; !ok {
		return Usage{}, fmt.Errorf("no %s", k)
	}
	return m.usage[k], nil
}

var vip = netip.MustParseAddr("198.18.0.200")

func mac(host string) string { return fmt.Sprintf("02:00:00:00:00:%02x", host[0]) }

// host is a member serving vip with one MAC.
func host(name string, draining bool, state gossip.State) gossip.Member {
	return gossip.Member{Name: name, State: state, Meta: gossip.Meta{
		Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: 1, Draining: draining,
		VIPs: []netip.Addr{vip}, MACs: []string{mac(name)},
	}}
}

func view(self string, ms ...gossip.Member) *gossip.View { return gossip.NewView(self, ms, 0) }

func clients(n int) []arp.Client {
	var cs []arp.Client
	for i := range n {
		cs = append(cs, arp.Client{VIP: vip, IP: netip.AddrFrom4([4]byte{198, 18, 0, byte(101 + i)}),
			MAC: net.HardwareAddr{0x02, 0xcc, 0, 0, 0, byte(i)}})
	}
	return cs
}

// source is what the daemon serves and knows.
type source struct {
	served  []ServedVIP
	clients []arp.Client
}

func (s *source) Served() []ServedVIP { return s.served }
func (s *source) All() iter.Seq[arp.Entry] {
	return func(yield func(arp.Entry) bool) {
		for _, c := range s.clients {
			e := arp.Entry{VIP: c.VIP, IP: c.IP, MAC: [6]byte(c.MAC), Protected: c.Protected, LastSeen: c.LastSeen, FirstSeen: c.FirstSeen}
			if !yield(e) {
				return
			}
		}
	}
}
func (s *source) Len() int { return len(s.clients) }

type clock struct{ t time.Duration }

func (c *clock) now() time.Duration { return c.t }

func newTest(self string, cs []arp.Client) (*Handover, *fakeMap, *clock) {
	m := &fakeMap{entries: map[Key]Entry{}, usage: map[Key]Usage{}}
	c := &clock{t: time.Hour}
	cfg := Config{Enabled: true, Grace: 10 * time.Minute, Idle: 2 * time.Minute}
	h := NewWithMap(cfg, self, &source{served, cs}, slog.New(slog.NewTextHandler(io.Discard, nil)), m, c.now)
	h.primed[vip] = true // an old member of the cluster, unless a test says otherwise
	return h, m, c
}

var hash = policy.Of(policy.Hash)

var served = []ServedVIP{{VIP: vip, Policy: hash, Interface: "eth0", MAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 'b'}}}

// handed returns the previous owner's host letter by client IP, from the map.
func handed(m *fakeMap, cs []arp.Client) map[netip.Addr]string {
	out := map[netip.Addr]string{}
	for _, c := range cs {
		if e, ok := m.entries[Key{vip, [6]byte(c.MAC)}]; ok {
			out[c.IP] = string(rune(e.Prev[5]))
		}
	}
	return out
}

// want computes, from the views, which clients moved from a live host to self.
func want(old, cur *gossip.View, self string, cs []arp.Client) map[netip.Addr]string {
	out := map[netip.Addr]string{}
	for _, c := range cs {
		o, n := hash.Owner(old, vip, c.IP), hash.Owner(cur, vip, c.IP)
		if n == self && o != self && o != "" {
			out[c.IP] = o
		}
	}
	return out
}

func TestDrainResumeAndFailure(t *testing.T) {
	t.Parallel()
	cs := clients(60)
	h, m, _ := newTest("b", cs)
	all := view("b", host("a", false, gossip.StateAlive), host("b", false, gossip.StateAlive), host("c", false, gossip.StateAlive))
	h.last = all // a member for a while
	h.Update(all)
	if len(m.entries) != 0 {
		t.Fatalf("%d entries in a steady cluster, want none", len(m.entries))
	}

	// a drains: its clients split between b and c; b hands its share to a.
	drained := view("b", host("a", true, gossip.StateAlive), host("b", false, gossip.StateAlive), host("c", false, gossip.StateAlive))
	h.Update(drained)
	w := want(all, drained, "b", cs)
	if len(w) == 0 {
		t.Fatal("test setup: no client moves from a to b")
	}
	if d := cmp.Diff(w, handed(m, cs)); d != "" {
		t.Errorf("handed over after a drains (-want +got):\n%s", d)
	}
	for k, e := range m.entries {
		if e.Own != [6]byte(served[0].MAC) || e.Deadline != time.Hour+10*time.Minute || !e.Client.IsValid() {
			t.Errorf("entry %s = %+v: want the client's IP, own MAC %s and deadline in 10m", k, e, served[0].MAC)
		}
	}
	// Another view change that moves nothing keeps the entries.
	h.Update(drained)
	if d := cmp.Diff(w, handed(m, cs)); d != "" {
		t.Errorf("handed over after a view change that moves nothing (-want +got):\n%s", d)
	}

	// a resumes: its clients go back. b keeps handing on what it does
	// not know: a frame a hands to b for a connection that is on a
	// host further back.
	h.Update(all)
	if d := cmp.Diff(w, handed(m, cs)); d != "" {
		t.Errorf("handed over after a resumes (-want +got):\n%s", d)
	}

	// a dies: nothing is handed to a dead host.
	dead := view("b", host("a", true, gossip.StateDead), host("b", false, gossip.StateAlive), host("c", false, gossip.StateAlive))
	h.Update(dead)
	if len(m.entries) != 0 {
		t.Errorf("%d entries after a died, want none", len(m.entries))
	}
	if h.Status().Ended["previous_gone"] != uint64(len(w)) {
		t.Errorf("ended = %v, want %d previous_gone", h.Status().Ended, len(w))
	}

	// A failure is not a planned move: a's clients that b takes when a
	// dies unannounced are not handed to anyone.
	h.Update(all)
	h.Update(dead)
	if len(m.entries) != 0 {
		t.Errorf("%d entries after a failed, want none", len(m.entries))
	}

	// The VIP is no longer served here: its entries end.
	h.Update(all)
	h.Update(drained)
	h.src.(*source).served = nil
	h.Update(nil)
	if len(m.entries) != 0 || h.Status().Ended["unserved"] != uint64(len(w)) {
		t.Errorf("%d entries after the VIP went, ended %v; want none, %d unserved", len(m.entries), h.Status().Ended, len(w))
	}
}

func TestGraceAndIdle(t *testing.T) {
	t.Parallel()
	cs := clients(60)
	h, m, c := newTest("b", cs)
	all := view("b", host("a", false, gossip.StateAlive), host("b", false, gossip.StateAlive))
	drained := view("b", host("a", true, gossip.StateAlive), host("b", false, gossip.StateAlive))
	h.last = all
	h.Update(drained)
	n := len(m.entries)
	if n == 0 {
		t.Fatal("test setup: nothing handed over")
	}
	// Keep one client busy: the kernel hands its packets over.
	var busy Key
	for k := range m.entries {
		busy = k
		break
	}
	for range 9 {
		c.t += time.Minute
		m.usage[busy] = Usage{Packets: m.usage[busy].Packets + 10, Last: c.t}
		h.Sweep()
	}
	if len(m.entries) != 1 {
		t.Fatalf("%d entries after 9 minutes with one busy client, want 1", len(m.entries))
	}
	if _, ok := m.entries[busy]; !ok {
		t.Fatal("the busy client's entry ended")
	}
	if s := h.Status(); s.Ended["idle"] != uint64(n-1) || len(s.Clients) != 1 || s.Clients[0].Packets != 90 {
		t.Errorf("status = %+v, want %d idle ends and one client with 90 packets", s, n-1)
	}
	c.t += time.Minute + time.Second
	m.usage[busy] = Usage{Packets: m.usage[busy].Packets + 10, Last: c.t}
	h.Sweep()
	if len(m.entries) != 0 || h.Status().Ended["grace"] != 1 {
		t.Errorf("after the grace period: %d entries, ended %v; want none, one by grace", len(m.entries), h.Status().Ended)
	}
}

func TestJoinAndWeight(t *testing.T) {
	t.Parallel()
	cs := clients(80)
	three := []gossip.Member{host("a", false, gossip.StateAlive), host("b", false, gossip.StateAlive), host("c", false, gossip.StateAlive)}
	before := view("x", three...)

	// A host joining takes clients from each of the others, and knows
	// which: its first view holds the whole cluster and the clients its
	// peers know (gossip.Cluster joins before its first view). Its
	// interface opens only after that view.
	h, m, c := newTest("d", cs)
	delete(h.primed, vip)
	src := h.src.(*source)
	src.served = []ServedVIP{{VIP: vip, Policy: hash, Interface: "eth0"}}
	joined := view("d", append(three, host("d", false, gossip.StateAlive))...)
	h.Update(joined)
	if len(m.entries) != 0 {
		t.Fatalf("%d entries before the interface opened", len(m.entries))
	}
	src.served = served
	c.t += time.Second
	h.Sweep()
	w := want(before, joined, "d", cs)
	if d := cmp.Diff(w, handed(m, cs)); d != "" {
		t.Errorf("handed over by a joining host (-want +got):\n%s", d)
	}
	prevs := map[string]bool{}
	for _, p := range w {
		prevs[p] = true
	}
	if len(prevs) != 3 {
		t.Errorf("the joining host takes clients from %v, want all three", prevs)
	}

	// c's weight goes up and c takes clients from a and b: b hands
	// nothing over.
	hb, mb, _ := newTest("b", cs)
	hb.last = view("b", three...)
	heavy := host("c", false, gossip.StateAlive)
	heavy.Meta.Weight = 3
	after := view("b", host("a", false, gossip.StateAlive), host("b", false, gossip.StateAlive), heavy)
	hb.Update(after)
	if len(mb.entries) != 0 {
		t.Errorf("b hands over %d clients after c's weight went up, want none", len(mb.entries))
	}
	// On c, every client it takes is handed to its previous owner.
	hc, mc, _ := newTest("c", cs)
	hc.last = view("c", three...)
	after = view("c", host("a", false, gossip.StateAlive), host("b", false, gossip.StateAlive), heavy)
	hc.Update(after)
	if d := cmp.Diff(want(view("c", three...), after, "c", cs), handed(mc, cs)); d != "" {
		t.Errorf("handed over by c after its weight went up (-want +got):\n%s", d)
	}
}

// A host without the kernel program hands nothing over and says why.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	h := New(Config{Enabled: false}, "b", 0, &source{served, clients(10)}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	h.Update(view("b", host("a", true, gossip.StateAlive), host("b", false, gossip.StateAlive)))
	s := h.Status()
	if s.Active || s.Error == "" || len(s.Clients) != 0 {
		t.Errorf("status = %+v, want inactive with a reason", s)
	}
	if got, want := s.Summary(), "OFF, moves reset open connections: disabled by handover.enabled = false"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
}

// The metrics show what the status shows.
func TestMetrics(t *testing.T) {
	t.Parallel()
	h, m, _ := newTest("b", clients(60))
	h.last = view("b", host("a", false, gossip.StateAlive), host("b", false, gossip.StateAlive))
	h.Update(view("b", host("a", true, gossip.StateAlive), host("b", false, gossip.StateAlive)))
	reg := prometheus.NewRegistry()
	reg.MustRegister(h.Collector())
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += "/" + l.GetValue()
			}
			got[name] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	if got, want := h.Status().Summary(), fmt.Sprintf("on no interface yet, %d moved clients (to a=%d), 0 segments handed over", len(m.entries), len(m.entries)); got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	if got[MetricClients] != float64(len(m.entries)) || got[MetricActive] != 1 || len(got) != 2+len(outcomeNames)+4 {
		t.Errorf("metrics %v: want %d clients, active, %d samples", got, len(m.entries), 2+len(outcomeNames)+4)
	}
}

// Two IPs behind one MAC (a host with two addresses, a router) make one
// entry, which stays put across view changes.
func TestSharedMAC(t *testing.T) {
	t.Parallel()
	cs := clients(60)
	for i := range cs {
		cs[i].MAC = cs[0].MAC
	}
	h, m, _ := newTest("b", cs)
	all := view("b", host("a", false, gossip.StateAlive), host("b", false, gossip.StateAlive))
	drained := view("b", host("a", true, gossip.StateAlive), host("b", false, gossip.StateAlive))
	h.last = all
	h.Update(drained)
	if len(m.entries) != 1 || m.puts != 1 {
		t.Fatalf("%d entries after %d puts, want 1 after 1", len(m.entries), m.puts)
	}
	for range 5 {
		h.Update(drained)
		h.Update(nil)
	}
	if m.puts != 1 {
		t.Errorf("%d puts after view changes that move nothing, want 1", m.puts)
	}
}

// BenchmarkUpdate100k is one update with 100,000 known clients, none moved:
// what the sweep does every second while a flood grows the table. Its
// B/op is garbage the daemon makes each second; a set of every client's
// IPs by MAC once made it 46 MB (200,000 allocations) and took the RSS past
// 100 MB (docs/benchmarks.md, "Memory with 100000 clients").
func BenchmarkUpdate100k(b *testing.B) {
	cs := make([]arp.Client, 100_000)
	for i := range cs {
		cs[i] = arp.Client{VIP: vip, IP: netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}),
			MAC: net.HardwareAddr{0x02, 0xcc, 0, byte(i >> 16), byte(i >> 8), byte(i)}}
	}
	h, _, _ := newTest("b", cs)
	v := view("b", host("a", false, gossip.StateAlive), host("b", false, gossip.StateAlive))
	h.Update(v)
	b.ReportAllocs()
	for b.Loop() {
		h.Update(v)
	}
}

// TestFlowGrace: the spread's flows are handed over for the grace, and
// not at all with the handover off.
func TestFlowGrace(t *testing.T) {
	t.Parallel()
	on := Config{Enabled: true, Grace: 3 * time.Minute}
	if got := on.FlowGrace(); got != 3*time.Minute {
		t.Errorf("enabled: FlowGrace = %v, want 3m", got)
	}
	off := on
	off.Enabled = false
	if got := off.FlowGrace(); got != 0 {
		t.Errorf("disabled: FlowGrace = %v, want 0", got)
	}
}
