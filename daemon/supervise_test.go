package daemon

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/arp/arptest"
	"github.com/arpshare/arpshare/internal/linkwatch"
)

// funcTask is a task made of a function; it is ready at once.
type funcTask struct {
	name  string
	run   func(ctx context.Context) error
	ready chan struct{}
}

func newFuncTask(name string, run func(ctx context.Context) error) *funcTask {
	t := &funcTask{name: name, run: run, ready: make(chan struct{})}
	close(t.ready)
	return t
}

func (t *funcTask) Run(ctx context.Context) error { return t.run(ctx) }
func (t *funcTask) Ready() <-chan struct{}        { return t.ready }
func (t *funcTask) String() string                { return t.name }

// TestSupervisor: a task started by apply that fails is logged and the
// others go on; one of the daemon's life that fails stops them all, and
// wait names it; a stopped task ends.
func TestSupervisor(t *testing.T) {
	t.Parallel()
	log := &logBuffer{}
	s := newSupervisor(context.Background(), slog.New(slog.NewTextHandler(log, nil)))
	blocked := func(ctx context.Context) error { <-ctx.Done(); return nil }

	start(s, newFuncTask("responder on test0", func(context.Context) error { return errors.New("socket: operation not permitted") }))
	stopped := make(chan struct{})
	r := start(s, newFuncTask("health check", func(ctx context.Context) error { <-ctx.Done(); close(stopped); return nil }))
	s.Go(newFuncTask("gossip", blocked))
	eventually(t, "the failure logged", func() bool { return strings.Contains(log.String(), "socket: operation not permitted") })
	if !s.ready(context.Background(), newFuncTask("ready", blocked)) {
		t.Fatal("a dynamic task's failure stopped the supervisor")
	}
	r.stop()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("a stopped task runs on")
	}

	s.Go(newFuncTask("api", func(context.Context) error { return errors.New("listen: address in use") }))
	select {
	case <-s.failed():
	case <-time.After(10 * time.Second):
		t.Fatal("a failed task of the daemon's life did not stop the supervisor")
	}
	if err := s.wait(); err == nil || err.Error() != "api: listen: address in use" {
		t.Errorf("wait: %v", err)
	}
	if s.ready(context.Background(), newFuncTask("late", blocked)) {
		t.Error("ready after a failure")
	}
}

// TestReadyOnStart: a task without readiness of its own is ready once it
// runs.
func TestReadyOnStart(t *testing.T) {
	t.Parallel()
	ran := make(chan struct{})
	task := readyOnStart(newFuncTask("watchdog", func(context.Context) error { close(ran); return nil }))
	select {
	case <-task.Ready():
		t.Fatal("ready before it runs")
	default:
	}
	if err := task.Run(context.Background()); err != nil || task.String() != "watchdog" {
		t.Fatal(err, task.String())
	}
	<-ran
	select {
	case <-task.Ready():
	default:
		t.Error("not ready after it ran")
	}
}

// stallingConn is an ARP conn whose writes block until release is closed:
// a responder that answers on it hangs.
type stallingConn struct {
	*arptest.Conn
	release chan struct{}
}

func (c stallingConn) WriteFrame(b []byte, dst net.HardwareAddr) error {
	<-c.release
	return c.Conn.WriteFrame(b, dst)
}

// TestWatchdogCoversResponders: a responder hung on a frame stops the
// watchdog's pings, and the log names it; a responder waiting for frames on
// a quiet segment, however long, does not.
func TestWatchdogCoversResponders(t *testing.T) {
	t.Parallel()
	c := newCluster("h1")
	n := c.prepare(t, "h1", vipV4, mac1)
	release := make(chan struct{})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	conns := make(chan *arptest.Conn, 4)
	listen := func(string) (arp.Conn, net.HardwareAddr, error) {
		conn := arptest.NewConn()
		conns <- conn
		return stallingConn{conn, release}, mac1, nil
	}
	n.d = newDaemon(n.d.config(), slog.New(slog.NewTextHandler(n.log, nil)), "test", seams{
		host: n.host, listen: listen, listenNDP: n.links.listenNDP,
		transport: c.trans["h1"], notify: n.notes.add, drainWait: 200 * time.Millisecond, links: n.kernel,
	})
	n.run()
	n.waitReady()
	conn := <-conns
	// Quiet: the responder waits for frames, and is not stuck.
	time.Sleep(300 * time.Millisecond)
	if stuck := n.d.stuckLoops(time.Now(), 100*time.Millisecond); slices.ContainsFunc(stuck, func(s string) bool { return strings.Contains(s, "responder") }) {
		t.Errorf("a responder waiting for frames is called stuck: %q", stuck)
	}
	// A client asks: the answer's write hangs.
	conn.In <- arpRequest(t, net.HardwareAddr{2, 0, 0, 0, 9, 1}, netip.MustParseAddr("198.18.0.101"), web)
	eventually(t, "the responder counted stuck", func() bool {
		stuck := n.d.stuckLoops(time.Now(), 200*time.Millisecond)
		return slices.ContainsFunc(stuck, func(s string) bool { return strings.HasPrefix(s, "arp responder on test0 (busy for") })
	})
	w := &watchdog{d: n.d}
	before := len(n.notes.s)
	w.check(time.Now(), 400*time.Millisecond)
	n.notes.mu.Lock()
	pinged := slices.Contains(n.notes.s[before:], "WATCHDOG=1")
	n.notes.mu.Unlock()
	if pinged {
		t.Error("pinged the watchdog with a responder hung")
	}
	if !strings.Contains(n.log.String(), "arp responder on test0 (busy for") {
		t.Errorf("the hung responder is not named in the log:\n%s", n.log.String())
	}
	close(release)
	eventually(t, "the responder waits again", func() bool {
		return !slices.ContainsFunc(n.d.stuckLoops(time.Now(), time.Hour), func(s string) bool { return strings.Contains(s, "responder") }) &&
			n.d.responders.snapshot()[linkwatch.Key{Iface: "test0"}].Busy().IsZero()
	})
}
