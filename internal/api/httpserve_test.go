package api

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// cut reports whether the server closes c within limit, while c sends
// nothing more.
func cut(t *testing.T, c net.Conn, limit time.Duration) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(limit))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func get(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.SetDeadline(time.Time{})
}

// TestServeCutsSlowAndIdle: a client that never sends, one that sends half
// a request and one idle after its answer are each closed by the server.
func TestServeCutsSlowAndIdle(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	lim := serverLimits{Header: 200 * time.Millisecond, Read: 300 * time.Millisecond, Write: time.Second, Idle: 300 * time.Millisecond, Conns: 4}
	go func() { done <- serve(ctx, l, http.NotFoundHandler(), lim) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	for _, tc := range []struct {
		name   string
		before func(c net.Conn)
	}{
		{"silent", func(net.Conn) {}},
		{"half a request", func(c net.Conn) { io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n") }},
		{"idle after an answer", func(c net.Conn) { get(t, c) }},
	} {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		tc.before(c)
		if !cut(t, c, 10*time.Second) {
			t.Errorf("%s: the connection still open after 10 s", tc.name)
		}
		c.Close()
	}
}

// TestServeLimitsConnections: with Conns open, another client's request
// waits until one of them ends, then is answered.
func TestServeLimitsConnections(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lim := serverLimits{Header: time.Minute, Read: time.Minute, Write: time.Minute, Idle: time.Minute, Conns: 2}
	go serve(ctx, l, http.NotFoundHandler(), lim)
	var held []net.Conn
	for range lim.Conns {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		get(t, c) // accepted and served: it holds its place
		held = append(held, c)
	}
	c, err := net.Dial("tcp", l.Addr().String()) // the kernel's queue takes it
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, err := c.Read(make([]byte, 1)); n > 0 || err == nil {
		t.Fatal("a connection beyond the limit was answered")
	}
	held[0].Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the waiting connection, once a place was free: %v", err)
	}
	resp.Body.Close()
}

// TestEndpointsLimitsAndPprof runs the API and metrics servers: both cut a
// silent client, and pprof is served on the API socket, never on the
// metrics port.
func TestEndpointsLimitsAndPprof(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lim := serverLimits{Header: 200 * time.Millisecond, Read: time.Second, Write: time.Second, Idle: time.Second, Conns: 4}
	a := &Server{path: filepath.Join(t.TempDir(), "api.sock"), ready: make(chan struct{}), pprof: true, limits: lim}
	m := &MetricsServer{addr: "127.0.0.1:0", reg: prometheus.NewRegistry(), ready: make(chan struct{}), limits: lim}
	go a.Run(ctx)
	go m.Run(ctx)
	<-a.ready
	<-m.ready
	dial := map[string]func() (net.Conn, error){
		"api":     func() (net.Conn, error) { return net.Dial("unix", a.path) },
		"metrics": func() (net.Conn, error) { return net.Dial("tcp", m.bound.String()) },
	}
	for name, d := range dial {
		c, err := d()
		if err != nil {
			t.Fatal(err)
		}
		if !cut(t, c, 10*time.Second) {
			t.Errorf("%s: a silent client still connected after 10 s", name)
		}
		c.Close()
	}
	for name, want := range map[string]int{"api": http.StatusOK, "metrics": http.StatusNotFound} {
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
			return dial[name]()
		}}}
		resp, err := client.Get("http://arpshare/debug/pprof/cmdline")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: /debug/pprof/cmdline: %s, want %d", name, resp.Status, want)
		}
		if want == http.StatusOK && !strings.Contains(string(b), filepath.Base(os.Args[0])) {
			t.Errorf("%s: /debug/pprof/cmdline: %q", name, b)
		}
	}
}

// TestCallsHoldNoSlot: the API client's calls, one after another, each get
// an answer at once from a server with fewer connection slots than calls
// and a long idle timeout: a finished call keeps no connection open.
func TestCallsHoldNoSlot(t *testing.T) {
	t.Parallel()
	socket := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, `{"owner":"h1"}`) })
	go serve(ctx, l, h, serverLimits{Header: time.Minute, Read: time.Minute, Write: time.Minute, Idle: time.Minute, Conns: 2})
	for i := range 5 {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		o, err := GetOwner(cctx, socket, "web", "198.18.0.101")
		ccancel()
		if err != nil || o.Owner != "h1" {
			t.Fatalf("call %d: %+v, %v", i+1, o, err)
		}
	}
}
