package propose

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeConn hands the watcher's reader the frames sent to it.
type fakeConn struct {
	frames chan []byte
	once   sync.Once
	closed chan struct{}
}

func newFakeConn() *fakeConn {
	return &fakeConn{frames: make(chan []byte), closed: make(chan struct{})}
}

func (f *fakeConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case fr := <-f.frames:
		return copy(b, fr), nil, nil
	case <-f.closed:
		return 0, nil, net.ErrClosed
	}
}

func (f *fakeConn) Stats() (*packet.Stats, error) { return &packet.Stats{Drops: 2}, nil }
func (f *fakeConn) Close() error                  { f.once.Do(func() { close(f.closed) }); return nil }

// The watcher opens a socket for each watched interface, counts what it
// reads, proposes the neighbour, and closes the socket when the config
// stops watching.
func TestWatcher(t *testing.T) {
	var mu sync.Mutex
	watched := map[string][]netip.Addr{"lo": {vip}}
	conns := map[string]*fakeConn{}
	w := New(func() map[string][]netip.Addr {
		mu.Lock()
		defer mu.Unlock()
		return watched
	}, func(netip.Addr, [6]byte) []netip.Addr { return []netip.Addr{routerA} },
		func(netip.Addr, [6]byte, []netip.Addr) bool { return false },
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	w.listen = func(iface string, vips []netip.Addr) (conn, error) {
		mu.Lock()
		defer mu.Unlock()
		c := newFakeConn()
		conns[iface] = c
		return c, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	var c *fakeConn
	for deadline := time.Now().Add(5 * time.Second); c == nil; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no socket opened on lo")
		}
		mu.Lock()
		c = conns["lo"]
		mu.Unlock()
	}
	for i := range Threshold {
		c.frames <- segment(router, src(i), vip, syn, 6, 5, 0)
	}
	c.frames <- segment(router, src(1), netip.MustParseAddr("198.18.0.9"), syn, 6, 5, 0)
	c.frames <- []byte{1, 2, 3}
	c.frames <- segment(router, src(1), vip, syn, 6, 5, 0) // read after the two before
	st := w.Status()
	if got := w.Proposed(vip); len(got) != 1 || got[0].Addresses[0] != routerA {
		t.Errorf("proposals %+v, want the router at %s", got, routerA)
	}
	if st.Segments[Counted] < Threshold || st.Segments[NotVIP] != 1 || st.Segments[BadFrame] != 1 || st.Segments["dropped_kernel"] != 2 {
		t.Errorf("segments %v", st.Segments)
	}
	if !st.Enabled || len(st.Interfaces) != 1 || st.Interfaces[0] != "lo" {
		t.Errorf("status %+v, want watching lo", st)
	}
	if n := series(w); n != len(outcomes) {
		t.Errorf("%d %s series, want one per outcome (%d)", n, MetricSegments, len(outcomes))
	}

	mu.Lock()
	watched = nil // node.propose_routers turned off
	mu.Unlock()
	w.Update()
	select {
	case <-c.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the socket stays open with node.propose_routers off")
	}
	for deadline := time.Now().Add(5 * time.Second); len(w.Proposed(vip)) != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("proposals kept with node.propose_routers off")
		}
	}
	if n := series(w); n != 0 {
		t.Errorf("%d series with node.propose_routers off, want none", n)
	}
}

// series counts the metrics w's collector gives.
func series(w *Watcher) int {
	ch := make(chan prometheus.Metric, 100)
	w.Collector().Collect(ch)
	close(ch)
	n := 0
	for range ch {
		n++
	}
	return n
}
