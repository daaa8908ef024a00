package gossiptest

import (
	"io"
	"testing"
	"time"
)

// TestTransport: messages reach a live member without its reader waiting on
// the sender; once the member is shut down they are dropped and streams to
// it end at once, and no sender blocks.
func TestTransport(t *testing.T) {
	t.Parallel()
	n := NewNetwork()
	defer n.Close()
	a, b := n.NewTransport("a"), n.NewTransport("b")
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
	if _, err := a.DialTimeout(b.Addr().String(), time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.StreamCh():
	case <-time.After(5 * time.Second):
		t.Fatal("stream never arrived")
	}

	b.Shutdown()
	for range 2 * queue { // more than the queue holds: all dropped, none waits
		if _, err := a.WriteTo([]byte{1}, b.Addr().String()); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := a.DialTimeout(b.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("read from a stream to a member shut down: %v, want EOF", err)
	}
	select {
	case p := <-b.PacketCh():
		t.Errorf("a member shut down got %v", p.Buf)
	default:
	}
}
