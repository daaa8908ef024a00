package gossiptest

import (
	"errors"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestTransport: messages reach a live member without its reader waiting on
// the sender; once the member is shut down they are dropped, connections to
// it are refused, and no sender blocks.
func TestTransport(t *testing.T) {
	t.Parallel()
	n := NewNetwork()
	a, b := n.NewTransport(), n.NewTransport()
	if a.Addr() == b.Addr() || !a.Addr().IsValid() {
		t.Fatalf("addresses %v and %v, want two distinct ones", a.Addr(), b.Addr())
	}
	// Nobody reads b's packets yet: the writes must not wait for a reader.
	for i := range 3 {
		if _, err := a.WriteTo([]byte{byte(i)}, b.Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		select {
		case p := <-b.PacketCh():
			if p.Buf[0] != byte(i) || p.From.String() != a.Addr().String() {
				t.Errorf("packet %d: %v from %v, want [%d] from %v", i, p.Buf, p.From, i, a.Addr())
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("packet %d never arrived", i)
		}
	}
	accepted := make(chan struct{})
	go func() {
		<-b.StreamCh()
		close(accepted)
	}()
	if _, err := a.DialTimeout(b.Addr().String(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	<-accepted
	if _, err := a.WriteTo([]byte{1}, "127.0.0.2:1"); err == nil {
		t.Error("a write to an address nobody has succeeded")
	}

	b.Shutdown()
	for range 2 * queue { // more than the queue holds: all dropped, none waits
		if _, err := a.WriteTo([]byte{1}, b.Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.DialTimeout(b.Addr().String(), 5*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("a connection to a member shut down: %v, want it refused", err)
	}
	select {
	case p := <-b.PacketCh():
		t.Errorf("a member shut down got %v", p.Buf)
	default:
	}
}

// TestCut: a member whose cable is pulled neither gets nor sends anything,
// its connections either way time out (not refused: its host is not up to
// refuse), and plugged back in it talks again.
func TestCut(t *testing.T) {
	t.Parallel()
	n := NewNetwork()
	a, b := n.NewTransport(), n.NewTransport()
	b.Cut(true)
	a.WriteTo([]byte{1}, b.Addr().String())
	b.WriteTo([]byte{2}, a.Addr().String())
	for _, dial := range []struct{ from, to *Transport }{{a, b}, {b, a}} {
		if _, err := dial.from.DialTimeout(dial.to.Addr().String(), 50*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("a connection %v -> %v across the cut: %v, want a timeout", dial.from.Addr(), dial.to.Addr(), err)
		}
	}
	select {
	case p := <-b.PacketCh():
		t.Errorf("a cut member got %v", p.Buf)
	case p := <-a.PacketCh():
		t.Errorf("a cut member's packet %v arrived", p.Buf)
	default:
	}
	b.Cut(false)
	a.WriteTo([]byte{3}, b.Addr().String())
	select {
	case p := <-b.PacketCh():
		if p.Buf[0] != 3 {
			t.Errorf("got %v, want [3]", p.Buf)
		}
	case <-time.After(5 * time.Second):
		t.Error("nothing arrived once the cable was back")
	}
}
