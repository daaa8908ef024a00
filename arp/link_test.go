package arp

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
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

func (h *recorder) handleNDP(_ *ndpLink, msg []byte, hops int, src netip.Addr, _ time.Time) {
	h.ndp = append(h.ndp, ndpRead{bytes.Clone(msg), hops, src})
}

// TestARPLinkServe: every frame read goes to the handler, in order, and
// the loop ends with the link's error.
func TestARPLinkServe(t *testing.T) {
	t.Parallel()
	conn := newFakeConn()
	conn.in <- []byte("one")
	conn.in <- []byte("two")
	close(conn.in)
	var h recorder
	err := (&arpLink{conn: conn, mac: myMAC}).serve(&h)
	if err == nil || err.Error() != "link lost" {
		t.Errorf("serve = %v, want the link's error", err)
	}
	if diff := cmp.Diff([][]byte{[]byte("one"), []byte("two")}, h.frames); diff != "" {
		t.Errorf("frames handed over (-want +got):\n%s", diff)
	}
}

// fakeNDP is an NDPConn fed from a channel, that records the groups it
// joins and leaves and fails those in fail.
type fakeNDP struct {
	NDPConn
	in     chan ndpIn
	joined []netip.Addr
	left   []netip.Addr
	fail   map[netip.Addr]bool
}

type ndpIn struct {
	msg []byte
	cm  *ipv6.ControlMessage
	src netip.Addr
}

func (c *fakeNDP) ReadRaw(b []byte) (int, *ipv6.ControlMessage, netip.Addr, error) {
	m, ok := <-c.in
	if !ok {
		return 0, nil, netip.Addr{}, net.ErrClosed
	}
	return copy(b, m.msg), m.cm, m.src, nil
}

func (c *fakeNDP) JoinGroup(g netip.Addr) error {
	c.joined = append(c.joined, g)
	if c.fail[g] {
		return errors.New("no buffer space available")
	}
	return nil
}

func (c *fakeNDP) LeaveGroup(g netip.Addr) error {
	c.left = append(c.left, g)
	if c.fail[g] {
		return errors.New("no such address")
	}
	return nil
}

// TestNDPLinkServe: the loop drops what another interface received, hands
// on the rest with the hop limit (-1 when the socket gave none) and the
// source without its zone, and ends with the link's error.
func TestNDPLinkServe(t *testing.T) {
	t.Parallel()
	conn := &fakeNDP{in: make(chan ndpIn, 4)}
	zoned := netip.MustParseAddr("fe80::1%eth0")
	conn.in <- ndpIn{[]byte("mine"), &ipv6.ControlMessage{IfIndex: 7, HopLimit: 255}, zoned}
	conn.in <- ndpIn{[]byte("other interface's"), &ipv6.ControlMessage{IfIndex: 8, HopLimit: 255}, zoned}
	conn.in <- ndpIn{[]byte("no control message"), nil, mine6}
	close(conn.in)
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
	group := func(v netip.Addr) netip.Addr {
		g, err := ndp.SolicitedNodeMulticast(v)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	conn := &fakeNDP{fail: map[netip.Addr]bool{group(b): true}}
	var logs bytes.Buffer
	l := &ndpLink{conn: conn, mac: myMAC, log: slog.New(slog.NewTextHandler(&logs, nil))}
	l.setVIPs(nil, []netip.Addr{a, b})
	l.setVIPs([]netip.Addr{a, b}, []netip.Addr{a, c})
	cmpAddr := cmp.Comparer(func(x, y netip.Addr) bool { return x == y })
	if diff := cmp.Diff([]netip.Addr{group(a), group(b), group(c)}, conn.joined, cmpAddr); diff != "" {
		t.Errorf("joined (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]netip.Addr{group(b)}, conn.left, cmpAddr); diff != "" {
		t.Errorf("left (-want +got):\n%s", diff)
	}
	out := logs.String()
	for _, want := range []string{
		"level=WARN msg=\"cannot join a VIP's solicited-node multicast group",
		"level=WARN msg=\"leave a solicited-node multicast group\" vip=" + b.String(),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "vip="+b.String()) != 2 || strings.Contains(out, "vip="+a.String()) {
		t.Errorf("log names the wrong VIPs:\n%s", out)
	}
}
