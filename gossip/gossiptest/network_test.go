package gossiptest

import (
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
	if _, err := a.DialTimeout(b.Addr().String(), 5*time.Second); err == nil {
		t.Error("a connection to a member shut down was accepted")
	}
	select {
	case p := <-b.PacketCh():
		t.Errorf("a member shut down got %v", p.Buf)
	default:
	}
}
