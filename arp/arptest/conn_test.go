package arptest

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/mdlayher/ndp"
)

func TestConn(t *testing.T) {
	c := NewConn()
	c.In <- []byte("frame")
	b := make([]byte, 16)
	if n, err := c.ReadFrame(b); err != nil || string(b[:n]) != "frame" {
		t.Fatalf("read %q, %v", b[:n], err)
	}
	if err := c.WriteFrame([]byte("reply"), nil); err != nil {
		t.Fatal(err)
	}
	if w := c.Written(); len(w) != 1 || string(w[0]) != "reply" {
		t.Errorf("written %q", w)
	}
	close(c.In)
	if _, err := c.ReadFrame(b); err == nil || err.Error() != "link lost" {
		t.Errorf("read after In closed: %v", err)
	}
	c = NewConn()
	if c.Closed() {
		t.Error("a new Conn is closed")
	}
	c.Close()
	if _, err := c.ReadFrame(b); !errors.Is(err, net.ErrClosed) || !c.Closed() {
		t.Errorf("read after Close: %v, closed %v", err, c.Closed())
	}
}

// TestNDPConn: messages from In are read with their source, sends and
// group changes are recorded, a group in Fail fails (and is recorded), and
// a closed conn reads nothing.
func TestNDPConn(t *testing.T) {
	c := NewNDPConn()
	src := netip.MustParseAddr("fd00::1")
	c.In <- NDPIn{Msg: []byte("ns"), Src: src}
	b := make([]byte, 16)
	if n, _, from, err := c.ReadRaw(b); err != nil || string(b[:n]) != "ns" || from != src {
		t.Fatalf("read %q from %s, %v", b[:n], from, err)
	}
	g, bad := netip.MustParseAddr("ff02::1:ff00:1"), netip.MustParseAddr("ff02::1:ff00:2")
	c.Fail = map[netip.Addr]bool{bad: true}
	if err := c.JoinGroup(g); err != nil || !c.Member(g) {
		t.Errorf("join %s: %v, member %v", g, err, c.Member(g))
	}
	if err := c.JoinGroup(bad); err == nil {
		t.Errorf("join %s in Fail: nil", bad)
	}
	if err := c.LeaveGroup(bad); err == nil {
		t.Errorf("leave %s in Fail: nil", bad)
	}
	if err := c.LeaveGroup(g); err != nil || c.Member(g) {
		t.Errorf("leave %s: %v, member %v", g, err, c.Member(g))
	}
	na := &ndp.NeighborAdvertisement{TargetAddress: src}
	if err := c.WriteTo(na, nil, src); err != nil {
		t.Fatal(err)
	}
	joined, left, sent := c.State()
	if len(joined) != 2 || len(left) != 2 || len(sent) != 1 || sent[0].Dst != src {
		t.Errorf("state: joined %v, left %v, sent %v", joined, left, sent)
	}
	if c.Closed() {
		t.Error("a new NDPConn is closed")
	}
	c.Close()
	if _, _, _, err := c.ReadRaw(b); !errors.Is(err, net.ErrClosed) || !c.Closed() {
		t.Errorf("read after Close: %v", err)
	}
	c = NewNDPConn()
	close(c.In)
	if _, _, _, err := c.ReadRaw(b); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read after In closed: %v", err)
	}
}
