package arp

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"

	"github.com/arpshare/arpshare/arp/arptest"
	"github.com/arpshare/arpshare/gossip"
)

// recorder is a handler that records what the links hand it.
type recorder struct {
	frames [][]byte
	ndp    []ndpRead
}

type ndpRead struct {
	Msg  []byte
	Hops int
	Src  netip.Addr
}

func (h *recorder) handleARP(_ *arpLink, frame []byte, _ time.Time) {
	h.frames = append(h.frames, bytes.Clone(frame))
}

func (h *recorder) readARP() {}

func (h *recorder) handleNDP(_ *ndpLink, msg []byte, hops int, src netip.Addr, _ time.Time) {
	h.ndp = append(h.ndp, ndpRead{bytes.Clone(msg), hops, src})
}

// TestARPLinkServe: every frame read goes to the handler, in order, and
// the loop ends with the link's error.
func TestARPLinkServe(t *testing.T) {
	t.Parallel()
	conn := arptest.NewConn()
	conn.In <- []byte("one")
	conn.In <- []byte("two")
	close(conn.In)
	var h recorder
	err := (&arpLink{conn: conn, mac: myMAC}).serve(&h)
	if err == nil || err.Error() != "link lost" {
		t.Errorf("serve = %v, want the link's error", err)
	}
	if diff := cmp.Diff([][]byte{[]byte("one"), []byte("two")}, h.frames); diff != "" {
		t.Errorf("frames handed over (-want +got):\n%s", diff)
	}
}

// TestNDPLinkServe: the loop drops what another interface received, hands
// on the rest with the hop limit (-1 when the socket gave none) and the
// source without its zone, and ends with the link's error.
func TestNDPLinkServe(t *testing.T) {
	t.Parallel()
	conn := arptest.NewNDPConn()
	zoned := netip.MustParseAddr("fe80::1%eth0")
	conn.In <- arptest.NDPIn{Msg: []byte("mine"), CM: &ipv6.ControlMessage{IfIndex: 7, HopLimit: 255}, Src: zoned}
	conn.In <- arptest.NDPIn{Msg: []byte("other interface's"), CM: &ipv6.ControlMessage{IfIndex: 8, HopLimit: 255}, Src: zoned}
	conn.In <- arptest.NDPIn{Msg: []byte("no control message"), Src: mine6}
	close(conn.In)
	var h recorder
	if err := (&ndpLink{conn: conn, mac: myMAC, index: 7}).serve(&h); !errors.Is(err, net.ErrClosed) {
		t.Errorf("serve = %v, want the link's error", err)
	}
	want := []ndpRead{
		{[]byte("mine"), 255, netip.MustParseAddr("fe80::1")},
		{[]byte("no control message"), -1, mine6},
	}
	if diff := cmp.Diff(want, h.ndp, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("messages handed over (-want +got):\n%s", diff)
	}
}

// TestNDPGroups: the link joins the solicited-node group of each VIP added
// and leaves those of the VIPs removed; a group it cannot join or leave is
// logged, with its VIP.
func TestNDPGroups(t *testing.T) {
	t.Parallel()
	a, b, c := netip.MustParseAddr("fd00::200"), netip.MustParseAddr("fd00::1:201"), netip.MustParseAddr("fd00::2:202")
	conn := arptest.NewNDPConn()
	conn.Fail = map[netip.Addr]bool{group(t, b): true}
	var logs bytes.Buffer
	l := &ndpLink{conn: conn, mac: myMAC, log: slog.New(slog.NewTextHandler(&logs, nil))}
	l.setVIPs(nil, []netip.Addr{a, b})
	l.setVIPs([]netip.Addr{a, b}, []netip.Addr{a, c})
	cmpAddr := cmp.Comparer(func(x, y netip.Addr) bool { return x == y })
	joined, left, _ := conn.State()
	if diff := cmp.Diff([]netip.Addr{group(t, a), group(t, b), group(t, c)}, joined, cmpAddr); diff != "" {
		t.Errorf("joined (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]netip.Addr{group(t, b)}, left, cmpAddr); diff != "" {
		t.Errorf("left (-want +got):\n%s", diff)
	}
	out := logs.String()
	for _, want := range []string{
		"level=WARN msg=\"cannot join a VIP's solicited-node multicast group",
		"level=WARN msg=\"leave a solicited-node multicast group\" vip_address=" + b.String(),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "vip_address="+b.String()) != 2 || strings.Contains(out, "vip_address="+a.String()) {
		t.Errorf("log names the wrong VIPs:\n%s", out)
	}
}

func group(t *testing.T, v netip.Addr) netip.Addr {
	t.Helper()
	g, err := ndp.SolicitedNodeMulticast(v)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestNDPResponderRun runs an IPv6 responder on a fake socket: it joins the
// VIP's group, answers the client it owns and only that one, announces,
// follows a new view and a new VIP, and lets go of the link when stopped.
func TestNDPResponderRun(t *testing.T) {
	t.Parallel()
	conn := arptest.NewNDPConn()
	table := NewClientTable(10, time.Hour)
	r := NewResponder(ResponderConfig{
		Interface: "nosuch0", IPv6: true, VIPs: hashVIPs6, Table: table, View: view, Logger: quietLogger(),
		ListenNDP: func(string) (NDPConn, net.HardwareAddr, error) { return conn, myMAC, nil },
	})
	if r.String() != "ndp responder on nosuch0" {
		t.Errorf("name %q", r.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	<-r.Ready()
	if r.MAC().String() != myMAC.String() {
		t.Errorf("MAC %v while open, want %v", r.MAC(), myMAC)
	}

	solicit := func(from netip.Addr) {
		m := &ndp.NeighborSolicitation{TargetAddress: vip6, Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: clientMAC}}}
		conn.In <- arptest.NDPIn{Msg: marshal(t, m), CM: &ipv6.ControlMessage{HopLimit: 255}, Src: from}
	}
	solicit(theirs6)
	solicit(mine6)
	waitFor(t, "an answer", func() bool { _, _, sent := conn.State(); return len(sent) == 1 })
	if err := r.Announce(vip6); err != nil {
		t.Fatal(err)
	}
	r.SetView(gossip.NewView("me", nil, 0)) // not a member: answers nobody
	solicit(mine6)
	waitFor(t, "the last solicitation counted", func() bool { return r.Stats().Frames[Key{vip6, NotOwner}] == 2 })
	other := netip.MustParseAddr("fd00::3:300")
	r.SetVIPs([]SharedVIP{{other, hashPolicy}})

	joined, left, sent := conn.State()
	if len(sent) != 2 || sent[0].Dst != mine6 || !sent[0].M.(*ndp.NeighborAdvertisement).Solicited ||
		sent[1].Dst != allNodes || sent[1].M.(*ndp.NeighborAdvertisement).Solicited {
		t.Errorf("sent %+v, want a solicited answer to %s, then an unsolicited announcement to %s", sent, mine6, allNodes)
	}
	cmpAddr := cmp.Comparer(func(x, y netip.Addr) bool { return x == y })
	if diff := cmp.Diff([]netip.Addr{group(t, vip6), group(t, other)}, joined, cmpAddr); diff != "" {
		t.Errorf("joined (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]netip.Addr{group(t, vip6)}, left, cmpAddr); diff != "" {
		t.Errorf("left (-want +got):\n%s", diff)
	}
	want := Stats{
		Frames:    map[Key]uint64{{vip6, Answered}: 1, {vip6, NotOwner}: 2},
		Replies:   map[netip.Addr]uint64{vip6: 1},
		Repoints:  map[netip.Addr]uint64{},
		Announces: map[netip.Addr]uint64{vip6: 1},
		Kernel:    map[Key]uint64{},
	}
	if diff := cmp.Diff(want, r.Stats(), cmpAddr); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r.MAC() != nil {
		t.Errorf("MAC %v after stop, want none", r.MAC())
	}
	if err := r.Announce(vip6); !errors.Is(err, ErrNotOpen) {
		t.Errorf("Announce after stop = %v, want ErrNotOpen", err)
	}
}

// TestARPAnnounce: an announcement is a broadcast gratuitous request, the
// VIP asking for itself from this host's MAC.
func TestARPAnnounce(t *testing.T) {
	t.Parallel()
	conn := arptest.NewConn()
	if err := (&arpLink{conn: conn, mac: myMAC}).announce(myMAC, vip); err != nil {
		t.Fatal(err)
	}
	var f ethernet.Frame
	var p arp.Packet
	if err := f.UnmarshalBinary(conn.Written()[0]); err != nil {
		t.Fatal(err)
	}
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		t.Fatal(err)
	}
	if f.Destination.String() != ethernet.Broadcast.String() || p.Operation != arp.OperationRequest ||
		p.SenderHardwareAddr.String() != myMAC.String() || p.SenderIP != vip || p.TargetIP != vip {
		t.Errorf("announcement to %s: %+v, want a broadcast who-has %s tell %s from %s", f.Destination, p, vip, vip, myMAC)
	}
}

// TestTableForget: forgetting a VIP drops its clients and only them.
func TestTableForget(t *testing.T) {
	t.Parallel()
	tb := NewClientTable(256, time.Hour)
	if tb.Max() != 256 {
		t.Errorf("Max = %d, want 256", tb.Max())
	}
	now := time.Unix(1000, 0)
	tb.Learn(vip, mine, clientMAC, now)
	tb.Learn(vip6, mine6, clientMAC, now)
	tb.Forget(vip)
	tb.Forget(netip.MustParseAddr("198.18.0.250")) // never served: nothing to do
	cs := tb.Clients()
	if len(cs) != 1 || cs[0].VIP != vip6 || cs[0].IP != mine6 {
		t.Errorf("clients after forgetting %s: %+v, want only %s of %s", vip, cs, mine6, vip6)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never saw %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
