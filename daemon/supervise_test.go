package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/arp/arptest"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/linkwatch"
)

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
		transport: c.trans["h1"], notify: n.notes.add, drainWait: 500 * time.Millisecond, links: n.kernel,
	})
	n.run()
	n.waitReady()
	conn := <-conns
	// Quiet: the responder waits for frames, and is not stuck.
	time.Sleep(300 * time.Millisecond)
	if stuck := n.d.newWatchdog().loops.stuck(time.Now(), 100*time.Millisecond); slices.ContainsFunc(stuck, func(s string) bool { return strings.Contains(s, "responder") }) {
		t.Errorf("a responder waiting for frames is called stuck: %q", stuck)
	}
	// A client asks: the answer's write hangs.
	conn.In <- arpRequest(t, net.HardwareAddr{2, 0, 0, 0, 9, 1}, netip.MustParseAddr("198.18.0.101"), web)
	eventually(t, "the responder counted stuck", func() bool {
		stuck := n.d.newWatchdog().loops.stuck(time.Now(), 200*time.Millisecond)
		return slices.ContainsFunc(stuck, func(s string) bool { return strings.HasPrefix(s, "arp responder on test0 (busy for") })
	})
	w := n.d.newWatchdog()
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
		return !slices.ContainsFunc(n.d.newWatchdog().loops.stuck(time.Now(), time.Hour), func(s string) bool { return strings.Contains(s, "responder") }) &&
			n.d.responders.Snapshot()[linkwatch.Key{Iface: "test0"}].Busy().IsZero()
	})
}

// TestViewChangedOnlyPublishes: gossip's callback leaves the view for the
// views task, which is not running here, and returns; views that come
// while none is taken replace each other; once the task runs, the
// repointer gets the latest.
func TestViewChangedOnlyPublishes(t *testing.T) {
	t.Parallel()
	n := newCluster("h1").prepare(t, "h1", vipV4, mac1)
	var last *gossip.View
	for i := range 100 {
		last = view("h1", "h1", fmt.Sprintf("h%d", i+2))
		n.d.viewChanged(last)
	}
	if got := n.d.views.latest.Load(); got != last || len(n.d.views.wake) != 1 {
		t.Fatalf("published %p (want the last, %p), %d wakes pending (want 1)", got, last, len(n.d.views.wake))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.d.views.Run(ctx)
	go n.d.repointer.Run(ctx)
	eventually(t, "the views task emptied its mailbox", func() bool { return len(n.d.views.wake) == 0 && n.d.views.Busy().IsZero() })
}
