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
