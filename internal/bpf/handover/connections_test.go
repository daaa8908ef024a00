package handover

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/arpshare/arpshare/internal/bpf"
)

// TestWaitConnections: an open connection to a VIP is counted (the
// listener is not) and a stop waits for it until the limit; once it ends,
// the wait ends too. 127.0.0.77 stands for the VIP: no other
// test uses it, and loopback answers for all of 127/8 without privileges.
func TestWaitConnections(t *testing.T) {
	t.Parallel()
	vip := netip.MustParseAddr("127.0.0.77")
	l, err := net.Listen("tcp4", "127.0.0.77:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if n, err := Connections([]netip.Addr{vip}); err != nil || n != 1 {
		t.Fatalf("Connections = %d, %v; want the one accepted", n, err)
	}
	var logs bytes.Buffer
	h := NewWithMap(DefaultConfig(), "a", &source{}, slog.New(slog.NewTextHandler(&logs, nil)), &fakeMap{entries: map[Key]Entry{}, usage: map[Key]Usage{}}, bpf.Monotonic)
	h.WaitConnections(context.Background(), []netip.Addr{vip}, 200*time.Millisecond)
	for _, want := range []string{"waiting for open connections to end\" connections=1", "stop_wait is over\" connections=1"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	client.Close()
	server.Close()
	logs.Reset()
	// A closing socket may linger a moment (LAST_ACK): it is waited for,
	// but the wait ends with it, long before the limit.
	h.WaitConnections(context.Background(), []netip.Addr{vip}, time.Minute)
	if strings.Contains(logs.String(), "stop_wait is over") {
		t.Errorf("WaitConnections after the connection closed waited out its limit:\n%s", logs.String())
	}
}

// TestRun: the sweeping task stops with its context.
func TestRun(t *testing.T) {
	t.Parallel()
	h := NewWithMap(DefaultConfig(), "a", &source{}, slog.New(slog.NewTextHandler(io.Discard, nil)), &fakeMap{entries: map[Key]Entry{}, usage: map[Key]Usage{}}, bpf.Monotonic)
	if h.String() != "handover" {
		t.Errorf("String = %q", h.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop with its context")
	}
}
