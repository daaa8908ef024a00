package arp

import (
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// BenchmarkTableExchange measures one periodic push-pull's share of the
// client table when 100,000 clients changed at once: the bytes
// SharedTable.LocalState hands memberlist (at most maxChanges), which
// memberlist encrypts and sends as they are (arpshare turns its
// compression off). "lab": the lab bench's made-up clients, consecutive
// addresses and MACs; "random": addresses in a /16 and MACs of one vendor,
// at random.
func BenchmarkTableExchange(b *testing.B) {
	vip := netip.MustParseAddr("198.18.0.200")
	for _, kind := range []string{"lab", "random"} {
		b.Run(kind, func(b *testing.B) {
			rnd := rand.New(rand.NewPCG(1, 2))
			t := NewClientTable(200_000, time.Hour)
			now := time.Now()
			for i := range 100_000 {
				ip := netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})
				mac := net.HardwareAddr{0x02, 0xf2, 0, byte(i >> 16), byte(i >> 8), byte(i)}
				if kind == "random" {
					ip = netip.AddrFrom4([4]byte{10, 1, byte(rnd.IntN(256)), byte(rnd.IntN(256))})
					mac = net.HardwareAddr{0x3c, 0xfd, 0xfe, byte(rnd.IntN(256)), byte(rnd.IntN(256)), byte(rnd.IntN(256))}
				}
				t.Learn(vip, ip, mac, now.Add(-time.Duration(rnd.IntN(600))*time.Second))
				t.Protect(vip, ip)
			}
			s := NewSharedTable(t, slog.New(slog.DiscardHandler))
			var raw int
			for b.Loop() {
				raw = len(s.LocalState(now.Add(-2 * time.Minute)))
			}
			if raw > maxChanges || raw < maxChanges/2 {
				b.Fatalf("an exchange carried %d bytes of changes, want at most %d and most of it", raw, maxChanges)
			}
			b.ReportMetric(float64(raw), "bytes/exchange")
		})
	}
}

// TestMergeState: a join's whole table is taken and not passed on, a
// periodic exchange's changes are passed on; neither lists the clients
// that were new (an allocation each: 1,000,000 of them at a join).
func TestMergeState(t *testing.T) {
	const n = 2000
	now := time.Now()
	src := NewClientTable(2*n, time.Hour)
	for i := range n {
		src.Learn(vip, fake(i), clientMAC, now)
	}
	state := src.Encode(now, time.Time{})
	header := len(src.Encode(now, now.Add(time.Hour)))
	for _, join := range []bool{true, false} {
		dst := NewClientTable(2*n, time.Hour)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		NewSharedTable(dst, slog.New(slog.DiscardHandler)).MergeState(state, join)
		runtime.ReadMemStats(&after)
		if allocs := after.Mallocs - before.Mallocs; allocs > n/10 {
			t.Errorf("join %v: %d allocations merging %d clients", join, allocs, n)
		}
		if dst.Len() != n {
			t.Errorf("join %v: %d clients taken, want %d", join, dst.Len(), n)
		}
		relayed := (len(dst.Encode(now, now.Add(-time.Minute))) - header) / entrySize4
		if want := map[bool]int{true: 0, false: n}[join]; relayed != want {
			t.Errorf("join %v: %d clients passed on, want %d", join, relayed, want)
		}
	}
}
