package spread

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"math/bits"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/bpf/bpftest"
)

// These tests need no kernel: they run the Spreader over a program that
// fails on demand, and the parts of Program and the flow hash that touch
// no map.

// failingProgram is fakeProgram whose calls fail while their error is set.
type failingProgram struct {
	*fakeProgram
	table, routers, peers, remove, attach, detach, outcomes, close error
	detached                                                       []int
}

func (f *failingProgram) Attach(i int) error {
	if f.attach != nil {
		return f.attach
	}
	return f.fakeProgram.Attach(i)
}

func (f *failingProgram) Detach(i int) error {
	f.detached = append(f.detached, i)
	if f.detach != nil {
		return f.detach
	}
	return f.fakeProgram.Detach(i)
}

func (f *failingProgram) SetTable(v netip.Addr, t []Slot) error {
	if f.table != nil {
		return f.table
	}
	return f.fakeProgram.SetTable(v, t)
}

func (f *failingProgram) SetRouters(v netip.Addr, m [][6]byte) error {
	if f.routers != nil {
		return f.routers
	}
	return f.fakeProgram.SetRouters(v, m)
}

func (f *failingProgram) SetPeers(m [][6]byte) error {
	if f.peers != nil {
		return f.peers
	}
	return f.fakeProgram.SetPeers(m)
}

func (f *failingProgram) RemoveVIP(v netip.Addr) error {
	if f.remove != nil {
		return f.remove
	}
	return f.fakeProgram.RemoveVIP(v)
}

func (f *failingProgram) Outcomes() (map[string]uint64, error) {
	if f.outcomes != nil {
		return nil, f.outcomes
	}
	return f.fakeProgram.Outcomes()
}

func (f *failingProgram) Close() error { return f.close }

func newFailing(t *testing.T, served ...RoutedVIP) (*Spreader, *failingProgram, *source, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	src := &source{served: served}
	f := &failingProgram{fakeProgram: newFake()}
	s := New("a", 0, src, slog.New(slog.NewTextHandler(&logs, nil)))
	s.load = func(int) (program, error) { return f, nil }
	return s, f, src, &logs
}

func twoHosts() *gossip.View {
	return gossip.NewView("a", []gossip.Member{member("a", gossip.StateAlive), member("b", gossip.StateAlive)}, 0)
}

var web = RoutedVIP{VIP: vip4, Name: "web", Interface: "lo", Routers: []netip.Addr{routerIP}}

// TestSpreaderRetriesKernelErrors checks that a table, routers or hosts
// the kernel refused are written again on the next update, and that a VIP
// the kernel would not let go of stays in the status until it does.
func TestSpreaderRetriesKernelErrors(t *testing.T) {
	t.Parallel()
	s, f, src, logs := newFailing(t, web)
	rmac := net.HardwareAddr{0x02, 0xee, 0, 0, 0, 1}
	src.clients = []arp.Client{{VIP: vip4, IP: routerIP, MAC: rmac}}
	boom := errors.New("map full")
	f.table, f.routers, f.peers = boom, boom, boom
	s.Update(twoHosts())
	if len(f.tables) != 0 || len(f.fakeProgram.routers) != 0 || f.fakeProgram.peers != nil {
		t.Fatalf("refused writes recorded: tables %v routers %v peers %v", f.tables, f.fakeProgram.routers, f.fakeProgram.peers)
	}
	for _, want := range []string{"cannot update the spread table", "cannot update the spread routers", "cannot update the spread program's hosts"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no warning %q:\n%s", want, logs)
		}
	}
	if st := s.Status(); len(st.VIPs) != 1 || len(st.VIPs[0].Hosts) != 0 {
		t.Errorf("status shows a table the kernel refused: %+v", st.VIPs)
	}
	f.table, f.routers, f.peers = nil, nil, nil
	s.Update(nil)
	if n := count(f.tables[vip4]); len(n) != 2 {
		t.Errorf("table not written again: %v", n)
	}
	if got := f.fakeProgram.routers[vip4]; !slices.Equal(got, [][6]byte{[6]byte(rmac)}) {
		t.Errorf("routers not written again: %v", got)
	}
	if want := [][6]byte{macOf("a"), macOf("b")}; !slices.Equal(f.fakeProgram.peers, want) {
		t.Errorf("peers %v, want %v", f.fakeProgram.peers, want)
	}

	f.remove = boom
	src.served = nil
	s.Update(nil)
	if st := s.Status(); len(st.VIPs) != 1 || len(f.removed) != 0 {
		t.Errorf("VIP the kernel kept is gone from the status: %+v (removed %v)", st.VIPs, f.removed)
	}
	f.remove = nil
	s.Update(nil)
	if st := s.Status(); len(st.VIPs) != 0 || !slices.Equal(f.removed, []netip.Addr{vip4}) {
		t.Errorf("VIP not removed once the kernel lets it: %+v (removed %v)", st.VIPs, f.removed)
	}
}

// TestSpreaderAttachErrors checks that an interface the program cannot go
// on is in the status and warned about once, that it is attached once it
// can be, that an interface made anew is detached from its old index, and
// that a failed detach still forgets the interface.
func TestSpreaderAttachErrors(t *testing.T) {
	t.Parallel()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skip("no lo:", err)
	}
	missing := RoutedVIP{VIP: vip6, Name: "gone", Interface: "arpshare-none0", Routers: []netip.Addr{routerIP}}
	s, f, src, logs := newFailing(t, web, missing)
	s.Update(twoHosts())
	s.Update(nil)
	st := s.Status()
	if !slices.Equal(st.Interfaces, []string{"lo"}) || st.Unattached["arpshare-none0"] == "" || len(st.Unattached) != 1 {
		t.Errorf("interfaces %v, unattached %v", st.Interfaces, st.Unattached)
	}
	if n := strings.Count(logs.String(), "unavailable on this interface"); n != 1 {
		t.Errorf("%d warnings for the missing interface, want 1:\n%s", n, logs)
	}

	// lo made anew: its old index is detached, the new attach fails.
	s.mu.Lock()
	s.ifaces["lo"] = lo.Index + 1000
	s.mu.Unlock()
	f.attach = errors.New("tcx busy")
	s.Update(nil)
	if !slices.Contains(f.detached, lo.Index+1000) {
		t.Errorf("old index not detached: %v", f.detached)
	}
	if st := s.Status(); len(st.Interfaces) != 0 || !strings.Contains(st.Unattached["lo"], "tcx busy") {
		t.Errorf("after a failed attach: interfaces %v, unattached %v", st.Interfaces, st.Unattached)
	}
	f.attach = nil
	s.Update(nil)
	if st := s.Status(); !slices.Equal(st.Interfaces, []string{"lo"}) || st.Unattached["lo"] != "" {
		t.Errorf("after the attach worked: interfaces %v, unattached %v", st.Interfaces, st.Unattached)
	}
	if !strings.Contains(logs.String(), "available on this interface again") {
		t.Errorf("no log line for the interface back:\n%s", logs)
	}

	f.detach = errors.New("link gone")
	src.served = []RoutedVIP{missing}
	s.Update(nil)
	if st := s.Status(); len(st.Interfaces) != 0 {
		t.Errorf("interface kept after a failed detach: %v", st.Interfaces)
	}
	if !strings.Contains(logs.String(), "take the spread program off an interface") {
		t.Errorf("no warning for the failed detach:\n%s", logs)
	}
}

// TestSpreaderRouterStatus checks the routers in the status and in the
// kernel: sorted, unique, one not seen logged once and then seen, a
// multicast MAC ignored, and a router taken out of the config forgotten.
func TestSpreaderRouterStatus(t *testing.T) {
	t.Parallel()
	r2, r3 := netip.MustParseAddr("198.18.0.253"), netip.MustParseAddr("198.18.0.252")
	vip := web
	vip.Routers = []netip.Addr{routerIP, r2, r3}
	s, f, src, logs := newFailing(t, vip)
	m1, m2 := net.HardwareAddr{0x02, 0xee, 0, 0, 0, 9}, net.HardwareAddr{0x02, 0xee, 0, 0, 0, 1}
	src.clients = []arp.Client{
		{VIP: vip4, IP: routerIP, MAC: m1},
		{VIP: vip4, IP: r2, MAC: m2},
		{VIP: vip4, IP: r3, MAC: net.HardwareAddr{0x01, 0, 0x5e, 0, 0, 1}},
	}
	s.Update(twoHosts())
	s.Update(nil)
	if got, want := f.fakeProgram.routers[vip4], [][6]byte{[6]byte(m2), [6]byte(m1)}; !slices.Equal(got, want) {
		t.Errorf("routers %v, want %v (sorted, no multicast)", got, want)
	}
	st := s.Status()
	if r := st.VIPs[0].Routers; r[routerIP.String()] != m1.String() || r[r2.String()] != m2.String() || r[r3.String()] != "" || len(r) != 3 {
		t.Errorf("status routers %v", r)
	}
	if n := strings.Count(logs.String(), "router not seen yet"); n != 1 {
		t.Errorf("%d log lines for the unseen router, want 1:\n%s", n, logs)
	}
	src.clients[2].MAC = net.HardwareAddr{0x02, 0xee, 0, 0, 0, 5}
	s.Update(nil)
	if got := f.fakeProgram.routers[vip4]; len(got) != 3 || !strings.Contains(logs.String(), "router seen") {
		t.Errorf("router seen later: routers %v\n%s", got, logs)
	}
	src.served[0].Routers = []netip.Addr{r2}
	s.Update(nil)
	s.mu.Lock()
	known := len(s.vips[vip4].known)
	s.mu.Unlock()
	if got := f.fakeProgram.routers[vip4]; !slices.Equal(got, [][6]byte{[6]byte(m2)}) || known != 1 {
		t.Errorf("after routers left the config: kernel %v, %d known", got, known)
	}
}

// TestStatusSummaryAndClose checks the one-line summary of an active
// spreader, a status without counters when the kernel will not give them,
// and that Run ending unloads the program even if that fails, after which
// Sync loads nothing.
func TestStatusSummaryAndClose(t *testing.T) {
	t.Parallel()
	s, f, _, logs := newFailing(t, web)
	if s.String() != "spread" {
		t.Errorf("String() = %q", s.String())
	}
	s.Update(twoHosts())
	st := s.Status()
	if got, want := st.Summary(), "active on [lo], 3 packets spread, 0 local"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	f.outcomes = errors.New("no counters")
	if st := s.Status(); st.Packets != nil || !st.Active {
		t.Errorf("status with failing counters: %+v", st)
	}
	f.close = errors.New("busy")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "unload spread program") {
		t.Errorf("no warning for the failed unload:\n%s", logs)
	}
	loads := 0
	s.load = func(int) (program, error) { loads++; return f, nil }
	s.ViewChanged(twoHosts())
	s.Sync()
	if st := s.Status(); st.Active || loads != 0 {
		t.Errorf("Sync after Run ended: active %v, %d loads", st.Active, loads)
	}
}

// TestTableHostsNeedOneUnicastMAC checks that a host that gossips no MAC,
// several, a group or zero MAC, or one that does not parse, gets no slots.
func TestTableHostsNeedOneUnicastMAC(t *testing.T) {
	t.Parallel()
	with := func(name string, macs ...string) gossip.Member {
		m := member(name, gossip.StateAlive)
		m.Meta.MACs = macs
		return m
	}
	v := gossip.NewView("a", []gossip.Member{
		member("c", gossip.StateAlive),
		member("a", gossip.StateAlive),
		with("b", "02:00:00:00:00:62", "02:00:00:00:00:63"),
		with("d", "01:00:5e:00:00:01"),
		with("e", "00:00:00:00:00:00"),
		with("f", "not a mac"),
		with("g", "02:00:00:00:00:00:00:67"),
		with("h"),
	}, 0)
	var names []string
	for _, h := range tableHosts(v, vip4) {
		names = append(names, h.Name)
		if h.MAC != macOf(h.Name) {
			t.Errorf("host %s with MAC %x", h.Name, h.MAC)
		}
	}
	if !slices.Equal(names, []string{"a", "c"}) {
		t.Errorf("table hosts %v, want [a c]", names)
	}
	if cmpString("a", "b") != -1 || cmpString("b", "a") != 1 || cmpString("a", "a") != 0 {
		t.Error("cmpString does not order strings")
	}
}

// murmur3 is MurmurHash3 x86_32 over b with seed 0, as its reference
// implementation: the kernel's flow hash is it over the flow's 32-bit
// words, little-endian.
func murmur3(b []byte) uint32 {
	const c1, c2 = 0xcc9e2d51, 0x1b873593
	var h uint32
	n := len(b)
	for ; len(b) >= 4; b = b[4:] {
		k := binary.LittleEndian.Uint32(b)
		k = bits.RotateLeft32(k*c1, 15) * c2
		h ^= k
		h = bits.RotateLeft32(h, 13)*5 + 0xe6546b64
	}
	var k uint32
	for i := len(b) - 1; i >= 0; i-- {
		k = k<<8 | uint32(b[i])
	}
	if len(b) > 0 {
		h ^= bits.RotateLeft32(k*c1, 15) * c2
	}
	h ^= uint32(n)
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	return h ^ h>>16
}

// TestFlowHashIsMurmur3 checks FlowHash against MurmurHash3 of the flow's
// words (the reference checked first against its published values), and
// that SlotOf keeps a hash's low bits.
func TestFlowHashIsMurmur3(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]uint32{"": 0, "hello": 0x248bfa47, "The quick brown fox jumps over the lazy dog": 0x2e4ff723} {
		if got := murmur3([]byte(in)); got != want {
			t.Fatalf("reference murmur3(%q) = %#x, want %#x", in, got, want)
		}
	}
	words := func(ws ...uint32) []byte {
		var b []byte
		for _, w := range ws {
			b = binary.LittleEndian.AppendUint32(b, w)
		}
		return b
	}
	addr := func(a netip.Addr) []uint32 {
		s := a.AsSlice()
		var out []uint32
		for i := 0; i < len(s); i += 4 {
			out = append(out, binary.BigEndian.Uint32(s[i:]))
		}
		return out
	}
	for _, c := range []struct {
		src, dst     string
		sport, dport uint16
		proto        uint8
	}{
		{"198.18.0.1", "198.18.0.200", 40000, 443, 6},
		{"198.18.3.7", "198.18.0.200", 53, 5353, 17},
		{"fd00::1", "fd00::200", 40000, 80, 6},
	} {
		src, dst := netip.MustParseAddr(c.src), netip.MustParseAddr(c.dst)
		ws := append(addr(src), addr(dst)...)
		if got, want := FlowHash(src, dst, c.sport, c.dport, c.proto, false), murmur3(words(ws...)); got != want {
			t.Errorf("%s > %s without ports: %#x, want %#x", src, dst, got, want)
		}
		ws = append(ws, uint32(c.sport)<<16|uint32(c.dport), uint32(c.proto))
		h := FlowHash(src, dst, c.sport, c.dport, c.proto, true)
		if want := murmur3(words(ws...)); h != want {
			t.Errorf("%s:%d > %s:%d/%d: %#x, want %#x", src, c.sport, dst, c.dport, c.proto, h, want)
		}
		if s := SlotOf(h); s != int(h%Slots) || s < 0 || s >= Slots {
			t.Errorf("SlotOf(%#x) = %d", h, s)
		}
	}
}

// TestProgramPlaces checks, without loading anything, that each VIP keeps
// its place in the slots map, that a VIP past the room is refused by name,
// that a freed place is taken again, and that a table of the wrong size
// is refused before it takes one; and that detaching an interface it is
// not on and closing an empty Program do nothing.
func TestProgramPlaces(t *testing.T) {
	t.Parallel()
	p := &Program{index: map[netip.Addr]uint32{}, half: map[netip.Addr]uint32{}, vips: 2}
	third := netip.MustParseAddr("198.18.0.3")
	if err := p.SetTable(third, make([]Slot, Slots-1)); err == nil || !strings.Contains(err.Error(), "4095 slots") {
		t.Errorf("short table: %v", err)
	}
	if len(p.index) != 0 {
		t.Errorf("a refused table took a place: %v", p.index)
	}
	place := func(vip netip.Addr) uint32 {
		t.Helper()
		i, err := p.place(vip)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	a, b := place(vip4), place(vip6)
	if a == b || a > 1 || b > 1 || place(vip4) != a {
		t.Errorf("places %d, %d, then %d", a, b, place(vip4))
	}
	if _, err := p.place(third); err == nil || !strings.Contains(err.Error(), third.String()) || !strings.Contains(err.Error(), "at most 2") {
		t.Errorf("third VIP in room for 2: %v", err)
	}
	delete(p.index, vip4)
	if got := place(third); got != a {
		t.Errorf("freed place %d, got %d", a, got)
	}
	if err := p.Detach(7); err != nil {
		t.Errorf("detach from an interface it is not on: %v", err)
	}
	if err := (&Program{}).Close(); err != nil {
		t.Errorf("close an empty program: %v", err)
	}
}

// TestSpecMatchesGo checks the compiled object against the Go side: the
// maps Program writes, and an outcome counter for each outcome name.
func TestSpecMatchesGo(t *testing.T) {
	t.Parallel()
	spec, err := loadSpreadBPF()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"slots", "vips", "routers", "peers", "outcomes"} {
		if spec.Maps[name] == nil {
			t.Errorf("no map %q in the object", name)
		}
	}
	if spec.Programs["spread"] == nil {
		t.Error("no program spread in the object")
	}
	if m := spec.Maps["outcomes"]; m != nil && int(m.MaxEntries) != len(outcomeNames) {
		t.Errorf("%d outcome counters, %d names", m.MaxEntries, len(outcomeNames))
	}
	if m := spec.Maps["vips"]; m != nil && m.MaxEntries != MaxVIPs {
		t.Errorf("vips map of %d, MaxVIPs %d", m.MaxEntries, MaxVIPs)
	}
}

// TestLoadUnprivileged checks that without CAP_BPF the real loader fails
// with no program (not a typed nil), and the spreader reports itself
// unavailable in its status and metric.
func TestLoadUnprivileged(t *testing.T) {
	t.Parallel()
	if bpftest.CanLoad() {
		t.Skip("this process may load BPF programs")
	}
	p, err := loadProgram(1)
	if err == nil || p != nil {
		t.Fatalf("loadProgram without privileges: %v, %v", p, err)
	}
	s := New("a", 0, &source{served: []RoutedVIP{web}}, slog.New(slog.DiscardHandler))
	s.Update(twoHosts())
	st := s.Status()
	if st.Active || !st.Configured || st.Error == "" || !strings.HasPrefix(st.Summary(), "UNAVAILABLE") {
		t.Errorf("status %+v", st)
	}
	if v, n := gather(t, s.Collector()); n[MetricAvailable] != 1 || v[MetricAvailable] != 0 {
		t.Errorf("%s = %v (%d samples), want 0", MetricAvailable, v[MetricAvailable], n[MetricAvailable])
	}
}

// TestWithPrevKeepsWasLocal checks that a slot that moved away from this
// host keeps its mark while it stays with the same host and the mark runs,
// and loses it once the mark has run out.
func TestWithPrevKeepsWasLocal(t *testing.T) {
	t.Parallel()
	b, c := macOf("b"), macOf("c")
	old := []Slot{{MAC: b, WasLocal: true, Deadline: 50}, {MAC: b, WasLocal: true, Deadline: 5}, {MAC: b, WasLocal: true, Deadline: 50}}
	table := []Slot{{MAC: b}, {MAC: b}, {MAC: c}}
	withPrev(table, old, map[[6]byte]bool{b: true, c: true}, 10, 70)
	want := []Slot{{MAC: b, WasLocal: true, Deadline: 50}, {MAC: b}, {MAC: c}}
	if !slices.Equal(table, want) {
		t.Errorf("marks %+v, want %+v", table, want)
	}
}

// TestHeld: a routed VIP is held from the start until this host has made
// its table over a view with the hosts that already serve it, or seen that
// none does; OnJoined says when it is no longer held; a VIP removed and
// served again is held again; without the program nothing is held.
func TestHeld(t *testing.T) {
	t.Parallel()
	held := func(m gossip.Member) gossip.Member { m.Meta.Unhealthy, m.Meta.VIPs = m.Meta.VIPs, nil; return m }
	s, _, src, _ := newFailing(t, web)
	joined := 0
	s.OnJoined = func() { joined++ }
	s.Update(nil)
	if !s.Held(vip4) {
		t.Fatal("not held before any view")
	}
	// The view of a host that starts: itself only, another host not yet.
	alone := gossip.NewView("a", []gossip.Member{held(member("a", gossip.StateAlive))}, 0)
	withB := gossip.NewView("a", []gossip.Member{held(member("a", gossip.StateAlive)), member("b", gossip.StateAlive)}, 0)
	s.Update(withB)
	if s.Held(vip4) || joined != 1 {
		t.Fatalf("with b's table made: held %v, OnJoined %d times", s.Held(vip4), joined)
	}
	s.Update(twoHosts())
	if joined != 1 {
		t.Errorf("OnJoined %d times, want once", joined)
	}
	src.served = nil
	s.Update(nil)
	src.served = []RoutedVIP{web}
	s.Update(withB)
	if s.Held(vip4) || joined != 2 {
		t.Errorf("served again with b: held %v, OnJoined %d times", s.Held(vip4), joined)
	}

	s, _, _, _ = newFailing(t, web)
	s.Update(alone)
	if s.Held(vip4) {
		t.Error("held while no other host serves the VIP")
	}
	s, _, _, _ = newFailing(t, web)
	// b is there but sends no frames yet (no MAC): no table over it.
	noMAC := member("b", gossip.StateAlive)
	noMAC.Meta.MACs = nil
	s.Update(gossip.NewView("a", []gossip.Member{held(member("a", gossip.StateAlive)), noMAC}, 0))
	if !s.Held(vip4) {
		t.Error("not held with no table over b")
	}

	s, _, _, _ = newFailing(t, web)
	s.load = func(int) (program, error) { return nil, errors.New("no tcx") }
	s.Update(nil)
	if s.Held(vip4) {
		t.Error("held without the program")
	}
}
