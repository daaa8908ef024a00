package repoint

import (
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/arp/policy"
)

// BenchmarkQueueMemory reports the heap the repointer holds per client for
// a periodic round and for a failover round (every client moved here), at
// 100,000 clients:
//
//	go test -run XXX -bench QueueMemory -benchtime 1x ./daemon/repoint
func BenchmarkQueueMemory(b *testing.B) {
	const n = 100_000
	table := arp.NewClientTable(n, time.Hour)
	for i := range n {
		ip := netip.AddrFrom4([4]byte{198, 18 + byte(i>>16), byte(i >> 8), byte(i)})
		table.Learn(testVIP, ip, net.HardwareAddr{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}, time.Unix(500, 0))
	}
	alone, none := view("h1", "h1"), view("h1", "h2") // none: h1 answers nobody
	for _, round := range []string{"periodic", "failover"} {
		b.Run(round, func(b *testing.B) {
			var per float64
			for b.Loop() {
				r := New(Config{Table: table, VIPs: served(policy.Hash), Logger: quietLog(), Reassert: time.Minute,
					Send: fakeSender{repoint: func(netip.Addr, arp.Client) error { return nil }}})
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				now := time.Unix(1000, 0)
				if round == "periodic" {
					r.last = alone
					r.reassert(alone, now)
				} else {
					r.last = none
					r.plan(alone, table.All(), now)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				per = float64(after.HeapAlloc-before.HeapAlloc) / n
				runtime.KeepAlive(r)
			}
			b.ReportMetric(per, "bytes/client")
		})
	}
}

// TestRoundLeavesNoMemory: once a failover round of 20,000 clients is
// over, the repointer holds nearly nothing more than before it (its maps
// and slices made anew, not kept at their largest).
func TestRoundLeavesNoMemory(t *testing.T) {
	const n = 20_000
	table := arp.NewClientTable(n, time.Hour)
	for i := range n {
		ip := netip.AddrFrom4([4]byte{198, 18 + byte(i>>16), byte(i >> 8), byte(i)})
		table.Learn(testVIP, ip, net.HardwareAddr{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)}, time.Unix(500, 0))
	}
	alone, none := view("h1", "h1"), view("h1", "h2")
	r := New(Config{Table: table, VIPs: served(policy.Hash), Logger: quietLog(), Rate: 1_000_000,
		Send: fakeSender{repoint: func(netip.Addr, arp.Client) error { return nil }}})
	r.last = none
	now := time.Unix(1000, 0)
	r.plan(none, table.All(), now)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	r.plan(alone, table.All(), now)
	if len(r.pending) != n {
		t.Fatalf("%d clients pending, want all %d", len(r.pending), n)
	}
	run(r, alone, now, 5*time.Second)
	// The settle 2 s after the change asks each client once more.
	if st := r.Status(); st.Clients != 0 || st.Unanswered != 2*n {
		t.Fatalf("status %+v: want the rounds over, %d unanswered", st, 2*n)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if kept := int64(after.HeapAlloc) - int64(before.HeapAlloc); kept > 256<<10 {
		t.Errorf("the round over, the repointer keeps %d KB more than before it", kept>>10)
	}
	runtime.KeepAlive(r)
}
