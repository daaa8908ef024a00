package repoint

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/arp/policy"
)

// countedVIPs counts how often the repointer looks at what it serves: once
// per turn of its loop that does work.
type countedVIPs struct {
	servedVIPs
	calls *atomic.Int64
}

func (c countedVIPs) VIPs() []arp.SharedVIP {
	c.calls.Add(1)
	return c.servedVIPs.VIPs()
}

// TestRepointerIdle: once every client has had its packets and the wait for
// answers is over, the repointer's loop sleeps (it no longer turns every
// tick), and the watchdog does not take the sleeping loop for stuck.
func TestRepointerIdle(t *testing.T) {
	t.Parallel()
	table := arp.NewClientTable(1000, time.Hour)
	for i := range 20 {
		table.Learn(testVIP, netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}, time.Unix(500, 0))
	}
	var mu sync.Mutex
	sent := 0
	calls := new(atomic.Int64)
	r := New(Config{
		Table: table, VIPs: countedVIPs{served(policy.Hash), calls},
		Send: fakeSender{repoint: func(netip.Addr, arp.Client) error {
			mu.Lock()
			defer mu.Unlock()
			sent++
			return nil
		}},
		Logger: quietLog(),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	r.ViewChanged(view("h1", "h1", "h2"))
	// The work: three packets per client 250 ms apart, a second's wait for
	// answers, a settle 2 s after the view. Then nothing is due.
	deadline := time.Now().Add(15 * time.Second)
	for r.Status().Unanswered == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(settleDelay + 2*confirmWait)
	mu.Lock()
	if sent == 0 {
		t.Fatal("no client re-pointed; the test proves nothing")
	}
	mu.Unlock()
	before := calls.Load()
	time.Sleep(20 * repointTick)
	if n := calls.Load() - before; n > 1 {
		t.Errorf("with nothing to do, the loop turned %d times in %s", n, 20*repointTick)
	}
	if age := time.Since(r.Heartbeat()); age > time.Second {
		t.Errorf("a sleeping loop looks stuck to the watchdog: last turned %s ago", age)
	}
}
