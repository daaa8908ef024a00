package health

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arpshare/arpshare/internal/config"
)

var testVIP = netip.MustParseAddr("198.18.0.200")

func checkVIP(c config.Check) config.VIP {
	return config.VIP{Name: "web", Address: testVIP, Check: &c}
}

func TestHealthRiseFall(t *testing.T) {
	t.Parallel()
	h := &Check{vip: checkVIP(config.Check{Rise: 2, Fall: 3})}
	fail := errors.New("down")
	steps := []struct {
		err     error
		changed bool
		healthy bool
	}{
		{nil, false, false}, // starts unhealthy; one pass is not enough
		{fail, false, false},
		{nil, false, false},
		{nil, true, true}, // two passes in a row
		{fail, false, true},
		{fail, false, true},
		{nil, false, true}, // a pass resets the failure count
		{fail, false, true},
		{fail, false, true},
		{fail, true, false}, // three failures in a row
		{fail, false, false},
	}
	for i, s := range steps {
		if changed := h.observe(s.err); changed != s.changed || h.healthy != s.healthy {
			t.Fatalf("step %d (err %v): changed %v healthy %v, want %v %v", i, s.err, changed, h.healthy, s.changed, s.healthy)
		}
	}
}

// TestHealthRun drives the check loop with a hand-made schedule: a probe
// that hangs is cut off by the timeout and counts as a failure.
func TestHealthRun(t *testing.T) {
	t.Parallel()
	hang := make(chan bool, 10) // true: the next probe hangs until cut off
	var changes []bool
	changed := make(chan struct{}, 10)
	h := New(checkVIP(config.Check{TCP: "unused:1", Interval: time.Hour, Timeout: 20 * time.Millisecond, Rise: 1, Fall: 1}),
		func(ok bool, err error) { changes = append(changes, ok); changed <- struct{}{} })
	h.probe = func(ctx context.Context) error {
		if <-hang {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}
	ticks := make(chan time.Time)
	h.ticks = func(time.Duration) (<-chan time.Time, func()) { return ticks, func() {} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.Run(ctx) }()

	hang <- false // the first check runs at once, without a tick
	<-changed
	hang <- true
	ticks <- time.Time{}
	<-changed
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(changes) != 2 || !changes[0] || changes[1] {
		t.Errorf("changes = %v, want [true false]", changes)
	}
}

func TestProbes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 2*time.Second) }

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	c, cancel := short()
	if err := newProbe(&config.Check{TCP: addr})(c); err != nil {
		t.Errorf("tcp probe of a listener: %v", err)
	}
	cancel()
	l.Close()
	c, cancel = short()
	if err := newProbe(&config.Check{TCP: closedPort(t)})(c); err == nil {
		t.Error("tcp probe of a closed port passed")
	}
	cancel()

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		w.WriteHeader(code)
	}))
	defer srv.Close()
	for code, ok := range map[int]bool{200: true, 204: true, 302: false, 500: false} {
		c, cancel := short()
		err := newProbe(&config.Check{HTTP: srv.URL + "/" + strconv.Itoa(code)})(c)
		cancel()
		if (err == nil) != ok {
			t.Errorf("http probe of a %d: err %v, want pass %v", code, err, ok)
		}
	}

	for argv, ok := range map[string]bool{"/bin/true": true, "/bin/false": false, "/nonexistent/check": false} {
		c, cancel := short()
		err := newProbe(&config.Check{Exec: []string{argv}})(c)
		cancel()
		if (err == nil) != ok {
			t.Errorf("exec %s: err %v, want pass %v", argv, err, ok)
		}
	}
}

// TestExecCheckKilled runs a check that hangs and forks: on timeout the whole
// process group dies.
func TestExecCheckKilled(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "pid")
	script := "sleep 30 & echo $! > " + pidFile + ".new; mv " + pidFile + ".new " + pidFile + "; wait"
	// The check's context ends once the child is known (a fixed timeout
	// could end before the shell even forks, on a loaded machine).
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- newProbe(&config.Check{Exec: []string{"/bin/sh", "-c", script}})(ctx) }()
	var b []byte
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var err error
		if b, err = os.ReadFile(pidFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the check never wrote its child's pid: %v", err)
		}
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		t.Fatalf("the check's child's pid %q: %v", b, err)
	}
	cancel()
	start := time.Now()
	err = <-errc
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("hung exec check: err %v, want a timeout", err)
	}
	// Not the child's 30 s: the probe does not wait for it.
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("hung exec check returned %s after its end", d)
	}
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the check's child %d outlived its timeout", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// closedPort returns a loopback address whose port is bound but does not
// listen: connections are refused, and no other test's listener can take
// the port in the meantime (as one could a port just closed).
func closedPort(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}

// TestCheckRunsOnItsSchedule: a check made by New probes a real listener at
// once, is Ready after that first probe, says which VIP it checks, and
// passes rise checks to become healthy.
func TestCheckRunsOnItsSchedule(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	healthy := make(chan bool, 1)
	v := checkVIP(config.Check{TCP: l.Addr().String(), Interval: 10 * time.Millisecond, Timeout: time.Second, Rise: 2, Fall: 2})
	h := New(v, func(ok bool, _ error) { healthy <- ok })
	if h.VIP().Name != "web" || h.String() != `health check for vip "web"` {
		t.Errorf("VIP %q, String %q", h.VIP().Name, h.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	<-h.Ready()
	if ok := <-healthy; !ok {
		t.Error("a listening service checked unhealthy")
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}
