package arp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"

	"github.com/arpshare/arpshare/arp/arptest"
	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/bpf"
	"github.com/arpshare/arpshare/internal/bpf/fastpath"
)

// fakeProgram is a kernel fast path that records, in order, what the
// responder asks of it; DrainSeen hands out seen once, Counts returns
// counts (by slot) until Close.
type fakeProgram struct {
	mu     sync.Mutex
	calls  []string
	seen   []fastpath.Seen
	counts map[uint8][2]uint64
	closed bool
}

func (f *fakeProgram) record(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	return nil
}

func (f *fakeProgram) Attach(_ int, mac [6]byte) error {
	return f.record("attach " + net.HardwareAddr(mac[:]).String())
}
func (f *fakeProgram) SetServing(on bool) error             { return f.record(fmt.Sprint("serving ", on)) }
func (f *fakeProgram) Replace(ds []fastpath.Decision) error { return f.record(replace(ds...)) }
func (f *fakeProgram) Put(ds []fastpath.Decision) error     { return f.record(put(ds...)) }
func (f *fakeProgram) Detach() error                        { return f.record("detach") }
func (f *fakeProgram) Arm() error                           { return nil }

// Wakes never wakes: the responder reads the reports once as it starts.
func (f *fakeProgram) Wakes(context.Context) (<-chan struct{}, error) { return nil, nil }

func (f *fakeProgram) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	return f.record("close")
}

func (f *fakeProgram) DrainSeen(fn func(fastpath.Seen)) error {
	f.mu.Lock()
	seen := f.seen
	f.seen = nil
	f.mu.Unlock()
	for _, s := range seen {
		fn(s)
	}
	return nil
}

func (f *fakeProgram) Counts(slot uint8) (answered, notOwner uint64, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, 0, errors.New("program closed")
	}
	return f.counts[slot][0], f.counts[slot][1], nil
}

func (f *fakeProgram) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// replace and put describe a call writing decisions, sorted by client.
func replace(ds ...fastpath.Decision) string { return "replace " + describe(ds) }
func put(ds ...fastpath.Decision) string     { return "put " + describe(ds) }

func describe(ds []fastpath.Decision) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = fmt.Sprintf("%s client %s at %s answer %v slot %d", d.VIP, d.Client, net.HardwareAddr(d.MAC[:]), d.Answer, d.Slot)
	}
	slices.Sort(s)
	return "[" + strings.Join(s, ", ") + "]"
}

// decision is the one for client, at clientMAC, of vip (counters in slot 0).
func decision(client netip.Addr, answer bool) fastpath.Decision {
	return fastpath.Decision{VIP: vip, Client: client, MAC: [6]byte(clientMAC), Answer: answer}
}

var (
	raceVIP = netip.MustParseAddr("198.18.0.201")
	vip2    = netip.MustParseAddr("198.18.0.202")
	// raceAway is a race VIP no host is eligible for: nobody answers.
	raceAway = netip.MustParseAddr("198.18.0.203")
	// fastVIPs: three VIPs the kernel never decides for, and a hash VIP
	// it does (with counters in slot 3).
	fastVIPs = []SharedVIP{{raceVIP, policy.Of(policy.Race)}, {raceAway, policy.Of(policy.Race)}, {vip6, hashPolicy}, {vip, hashPolicy}}
)

// member is a host serving the VIPs above but raceAway, at its own MAC.
func member(name string, mac byte, state gossip.State) gossip.Member {
	return gossip.Member{Name: name, State: state, Meta: gossip.Meta{
		Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: 1,
		VIPs: []netip.Addr{vip, raceVIP, vip2, vip6}, MACs: []string{net.HardwareAddr{2, 0, 0, 0, 0, mac}.String()},
	}}
}

var (
	// twoHosts: this host and its peer share the clients, as in view.
	twoHosts = gossip.NewView("me", []gossip.Member{member("me", 1, gossip.StateAlive), member("peer", 2, gossip.StateAlive)}, 0)
	// peerDead: this host answers every client.
	peerDead = gossip.NewView("me", []gossip.Member{member("me", 1, gossip.StateAlive), member("peer", 2, gossip.StateDead)}, 0)
	// noQuorum: of the two hosts expected, one is left: it answers nobody.
	noQuorum = gossip.NewView("me", []gossip.Member{member("me", 1, gossip.StateAlive), member("peer", 2, gossip.StateDead)}, 2)
	// thirdJoined: a host joined and took some of this host's clients.
	thirdJoined = gossip.NewView("me", []gossip.Member{member("me", 1, gossip.StateAlive), member("peer", 2, gossip.StateAlive), member("third", 3, gossip.StateAlive)}, 0)

	// Clients of vip: one this host answers before and after the third
	// host joins, one it answers until then, and one of its peer's.
	staying = clientWhere("198.18.1.1", func(before, after string) bool { return before == "me" && after == "me" })
	leaving = clientWhere("198.18.1.1", func(before, after string) bool { return before == "me" && after == "third" })
	peers   = clientWhere("198.18.1.1", func(before, after string) bool { return before == "peer" && after == "peer" })
)

// clientWhere returns the first client of vip from start on whose owners
// in twoHosts and thirdJoined are as wanted.
func clientWhere(start string, want func(before, after string) bool) netip.Addr {
	a := netip.MustParseAddr(start)
	for !want(hashPolicy.Owner(twoHosts, vip, a), hashPolicy.Owner(thirdJoined, vip, a)) {
		a = a.Next()
	}
	return a
}

// protect puts clients of vip in the table, protected as by a second
// request.
func protect(table *ClientTable, vip netip.Addr, clients ...netip.Addr) {
	for _, c := range clients {
		table.Learn(vip, c, clientMAC, time.Now())
		table.Learn(vip, c, clientMAC, time.Now())
	}
}

// runFast runs a responder on a fake conn with a fake kernel fast path,
// and returns it, its conn and a function that stops it.
func runFast(t *testing.T, cfg ResponderConfig) (r *Responder, conn *arptest.Conn, stop func()) {
	t.Helper()
	conn = arptest.NewConn()
	// An interface the machine has, for attachFastPath to look up: the
	// fake program attaches nothing to it.
	cfg.Interface = "lo"
	cfg.Listen = func(string) (Conn, net.HardwareAddr, error) { return conn, myMAC, nil }
	cfg.FastPath = true
	cfg.Logger = quietLogger()
	r = NewResponder(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	return r, conn, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

// waitCalls waits until the fake has had n calls.
func waitCalls(t *testing.T, f *fakeProgram, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d calls to the kernel fast path", n), func() bool { return len(f.Calls()) >= n })
}

// start is what the fast path is asked first: on the interface's MAC,
// the decisions for the protected clients of vip, then to answer.
var start = []string{"attach " + myMAC.String(), replace(decision(staying, true), decision(leaving, true), decision(peers, false)), "serving true"}

// stopped is what it is asked when the responder stops.
var stopped = []string{"serving false", "detach", "close"}

// TestFastPathRewritesOnChange: when the VIPs or the view change, the
// kernel stops answering at once, gets every protected client's new
// decision, and answers again unless this host answers nobody.
func TestFastPathRewritesOnChange(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(r *Responder)
		want   []string // after the pause
	}{
		{"VIP removed", func(r *Responder) { r.SetVIPs(nil) }, []string{replace(), "serving true"}},
		{"VIP now races", func(r *Responder) { r.SetVIPs([]SharedVIP{{vip, policy.Of(policy.Race)}}) }, []string{replace(), "serving true"}},
		{"quorum lost", func(r *Responder) { r.SetView(noQuorum) }, []string{replace()}},
		{"peer died: its client moves here", func(r *Responder) { r.SetView(peerDead) },
			[]string{replace(decision(staying, true), decision(leaving, true), decision(peers, true)), "serving true"}},
		{"host joined: a client moves to it", func(r *Responder) { r.SetView(thirdJoined) },
			[]string{replace(decision(staying, true), decision(leaving, false), decision(peers, false)), "serving true"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			table := NewClientTable(10, time.Hour)
			// Never decided in the kernel: a duplicate address probe's
			// sender, and a VIP.
			protect(table, vip, staying, leaving, peers, netip.IPv4Unspecified(), vip)
			f := &fakeProgram{}
			r, _, stop := runFast(t, ResponderConfig{VIPs: []SharedVIP{{vip, hashPolicy}}, Table: table, View: twoHosts, program: f})
			waitCalls(t, f, len(start))
			tt.change(r)
			waitCalls(t, f, len(start)+1+len(tt.want))
			stop()
			want := slices.Concat(start, []string{"serving false"}, tt.want, stopped)
			if diff := cmp.Diff(want, f.Calls()); diff != "" {
				t.Errorf("calls to the kernel fast path (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFastPathAddsDecidedClients: a client decided in user space goes to
// the kernel after the read that protected it; the clients of a VIP whose
// hosts race, or of an IPv6 VIP, never do.
func TestFastPathAddsDecidedClients(t *testing.T) {
	t.Parallel()
	table := NewClientTable(20, time.Hour)
	protect(table, vip, staying, peers)
	protect(table, raceVIP, staying)
	protect(table, vip6, mine6)
	f := &fakeProgram{}
	_, conn, stop := runFast(t, ResponderConfig{VIPs: fastVIPs, Table: table, View: twoHosts, program: f})
	// vip is the fourth VIP: its counters are in slot 3.
	decision := func(client netip.Addr, answer bool) fastpath.Decision {
		d := decision(client, answer)
		d.Slot = 3
		return d
	}
	newMine := clientWhere("198.18.2.1", func(before, _ string) bool { return before == "me" })
	newPeers := clientWhere("198.18.2.1", func(before, _ string) bool { return before == "peer" })
	want := []string{"attach " + myMAC.String(), replace(decision(staying, true), decision(peers, false)), "serving true"}
	waitCalls(t, f, len(want))
	// Each asks twice: the second request protects it. The race VIPs'
	// client first (answered after a delay, and not answered): once the
	// others are in, its requests were read.
	for _, frame := range [][]byte{
		request(t, arp.OperationRequest, clientMAC, leaving, raceVIP), request(t, arp.OperationRequest, clientMAC, leaving, raceVIP),
		request(t, arp.OperationRequest, clientMAC, leaving, raceAway), request(t, arp.OperationRequest, clientMAC, leaving, raceAway),
		request(t, arp.OperationRequest, clientMAC, newMine, vip), request(t, arp.OperationRequest, clientMAC, newMine, vip),
		request(t, arp.OperationRequest, clientMAC, newPeers, vip), request(t, arp.OperationRequest, clientMAC, newPeers, vip),
	} {
		conn.In <- frame
	}
	want = append(want, put(decision(newMine, true)), put(decision(newPeers, false)))
	waitCalls(t, f, len(want))
	stop()
	if diff := cmp.Diff(append(want, stopped...), f.Calls()); diff != "" {
		t.Errorf("calls to the kernel fast path (-want +got):\n%s", diff)
	}
}

// TestFastPathNDP: an NDP responder keeps the NDP program's decisions as
// an ARP responder keeps the ARP one's: its protected IPv6 clients at
// start, then each client decided in user space after the solicitation
// that protected it, if that carried its MAC (the kernel answers to it).
func TestFastPathNDP(t *testing.T) {
	t.Parallel()
	owner := func(before string) netip.Addr {
		a := netip.MustParseAddr("fd00::1:1")
		for hashPolicy.Owner(twoHosts, vip6, a) != before {
			a = a.Next()
		}
		return a
	}
	staying6, peers6 := owner("me"), owner("peer")
	newMine6, newPeers6 := staying6.Next(), peers6.Next()
	for hashPolicy.Owner(twoHosts, vip6, newMine6) != "me" {
		newMine6 = newMine6.Next()
	}
	for hashPolicy.Owner(twoHosts, vip6, newPeers6) != "peer" {
		newPeers6 = newPeers6.Next()
	}
	noMAC := newMine6.Next()
	d6 := func(client netip.Addr, answer bool) fastpath.Decision {
		return fastpath.Decision{VIP: vip6, Client: client, MAC: [6]byte(clientMAC), Answer: answer}
	}
	table := NewClientTable(20, time.Hour)
	protect(table, vip6, staying6, peers6)
	protect(table, vip, staying) // IPv4: the ARP responder's
	f := &fakeProgram{}
	conn := arptest.NewNDPConn()
	r := NewResponder(ResponderConfig{
		Interface: "lo", IPv6: true, VIPs: []SharedVIP{{vip6, hashPolicy}}, Table: table, View: twoHosts, Logger: quietLogger(),
		ListenNDP: func(string) (NDPConn, net.HardwareAddr, error) { return conn, myMAC, nil },
		FastPath:  true, program: f,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	want := []string{"attach " + myMAC.String(), replace(d6(staying6, true), d6(peers6, false)), "serving true"}
	waitCalls(t, f, len(want))
	ns := func(from net.HardwareAddr) []byte {
		m := &ndp.NeighborSolicitation{TargetAddress: vip6}
		if from != nil {
			m.Options = []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: from}}
		}
		return marshal(t, m)
	}
	cm := &ipv6.ControlMessage{HopLimit: 255}
	// Each asks twice: the second solicitation protects it. The one
	// without its MAC first: once the others are in, it was read.
	for _, in := range []arptest.NDPIn{
		{Msg: ns(nil), CM: cm, Src: noMAC}, {Msg: ns(nil), CM: cm, Src: noMAC},
		{Msg: ns(clientMAC), CM: cm, Src: newMine6}, {Msg: ns(clientMAC), CM: cm, Src: newMine6},
		{Msg: ns(clientMAC), CM: cm, Src: newPeers6}, {Msg: ns(clientMAC), CM: cm, Src: newPeers6},
	} {
		conn.In <- in
	}
	want = append(want, put(d6(newMine6, true)), put(d6(newPeers6, false)))
	waitCalls(t, f, len(want))
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if diff := cmp.Diff(append(want, stopped...), f.Calls()); diff != "" {
		t.Errorf("calls to the kernel fast path (-want +got):\n%s", diff)
	}
}

// TestFastPathLearnsSeenClients: the clients the kernel decided on are
// learned as if user space had read their requests: last seen when the
// kernel saw them, and a unicast request is news for the other hosts
// where a broadcast one, which they heard too, is not.
func TestFastPathLearnsSeenClients(t *testing.T) {
	t.Parallel()
	table := NewClientTable(10, time.Hour)
	hourAgo := time.Now().Add(-time.Hour)
	for range 2 {
		table.Learn(vip, staying, clientMAC, hourAgo)
		table.Learn(vip, leaving, clientMAC, hourAgo)
	}
	mono, now := bpf.Monotonic(), time.Now()
	f := &fakeProgram{seen: []fastpath.Seen{
		{VIP: vip, Client: staying, MAC: [6]byte(clientMAC), Last: mono - 2*time.Second},                               // broadcast only
		{VIP: vip, Client: leaving, MAC: [6]byte(clientMAC), Last: mono - 3*time.Second, Direct: mono - 7*time.Second}, // unicast, then broadcast
		{VIP: vip, Client: peers, MAC: [6]byte(clientMAC), Last: mono - 5*time.Second, Direct: mono - 5*time.Second},   // new, unicast
	}}
	_, _, stop := runFast(t, ResponderConfig{VIPs: []SharedVIP{{vip, hashPolicy}}, Table: table, View: twoHosts, program: f})
	waitFor(t, "the last seen client learned", func() bool { _, ok := table.Get(vip, peers); return ok })
	stop()

	for _, want := range []Client{
		{VIP: vip, IP: staying, MAC: clientMAC, LastSeen: now.Add(-2 * time.Second), Protected: true},
		{VIP: vip, IP: leaving, MAC: clientMAC, LastSeen: now.Add(-3 * time.Second), Protected: true},
		{VIP: vip, IP: peers, MAC: clientMAC, LastSeen: now.Add(-5 * time.Second)},
	} {
		got, _ := table.Get(vip, want.IP)
		if got.MAC.String() != want.MAC.String() || got.Protected != want.Protected || got.LastSeen.Sub(want.LastSeen).Abs() > 100*time.Millisecond {
			t.Errorf("client %s: %+v, want %+v", want.IP, got, want)
		}
	}
	// Gossip since a minute ago: the client whose unicast request moved
	// its last seen time by an hour, not the one only heard by broadcast.
	other := NewClientTable(10, time.Hour)
	if _, err := other.Merge(table.Encode(time.Now(), now.Add(-time.Minute)), time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, ok := other.Get(vip, leaving); !ok || other.Len() != 1 {
		t.Errorf("gossiped %v, want %s only", other.Clients(), leaving)
	}
}

// TestFastPathCounts: what the kernel decided counts in the VIPs' frames
// and replies while it runs, and still after the program is gone.
func TestFastPathCounts(t *testing.T) {
	t.Parallel()
	f := &fakeProgram{counts: map[uint8][2]uint64{0: {7, 3}, 1: {0, 4}}}
	r, conn, stop := runFast(t, ResponderConfig{VIPs: []SharedVIP{{vip, hashPolicy}, {vip2, hashPolicy}}, Table: NewClientTable(10, time.Hour), View: twoHosts, program: f})
	conn.In <- request(t, arp.OperationRequest, clientMAC, staying, vip)
	waitFor(t, "the request counted", func() bool { return r.Stats().Frames[Key{vip, Answered}] == 8 })
	want := Stats{
		Frames:    map[Key]uint64{{vip, Answered}: 1 + 7, {vip, NotOwner}: 3, {vip2, NotOwner}: 4},
		Replies:   map[netip.Addr]uint64{vip: 1 + 7},
		Repoints:  map[netip.Addr]uint64{},
		Announces: map[netip.Addr]uint64{},
		Kernel:    map[Key]uint64{{vip, Answered}: 7, {vip, NotOwner}: 3, {vip2, NotOwner}: 4},
	}
	cmpAddr := cmp.Comparer(func(x, y netip.Addr) bool { return x == y })
	if diff := cmp.Diff(want, r.Stats(), cmpAddr); diff != "" {
		t.Errorf("stats while running (-want +got):\n%s", diff)
	}
	stop()
	if diff := cmp.Diff(want, r.Stats(), cmpAddr); diff != "" {
		t.Errorf("stats after the program is gone (-want +got):\n%s", diff)
	}
}

// TestFlushDropsStaleDecisions: decisions noted under a snapshot that was
// replaced before the read ended are not written: the rewrite has the new
// ones.
func TestFlushDropsStaleDecisions(t *testing.T) {
	t.Parallel()
	table := NewClientTable(10, time.Hour)
	r := NewResponder(ResponderConfig{Interface: "eth0", VIPs: []SharedVIP{{vip, hashPolicy}}, Table: table, View: twoHosts, Logger: quietLogger()})
	f := &fakeProgram{}
	r.kern.Store(&kernel{prog: f, dirty: make(chan struct{}, 1)})
	l := &arpLink{conn: arptest.NewConn(), mac: myMAC, reply: make([]byte, arpFrameLen)}
	frame := request(t, arp.OperationRequest, clientMAC, peers, vip)
	r.handleARP(l, frame, time.Now())
	r.handleARP(l, frame, time.Now()) // protected now: noted
	r.SetView(peerDead)
	r.readARP() // writes nothing

	// One read of two frames, the snapshot changing in between: the
	// second frame's decision only.
	r.handleARP(l, frame, time.Now())
	r.SetView(twoHosts)
	r.handleARP(l, frame, time.Now())
	r.readARP()
	want := []string{"serving false", "serving false", put(decision(peers, false))}
	if diff := cmp.Diff(want, f.Calls()); diff != "" {
		t.Errorf("calls to the kernel fast path (-want +got):\n%s", diff)
	}
}
