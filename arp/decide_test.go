package arp

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"

	"github.com/arpshare/arpshare/gossip"
)

// The decision on a frame must not allocate: at tens of thousands of frames
// a second, garbage is CPU. The benchmarks print the numbers; this test
// holds the line (allocation counts are exact, unlike times).
func TestDecisionAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	r := NewResponder(ResponderConfig{Interface: "eth0", VIPs: hashVIPs, Table: NewClientTable(100, time.Hour), View: view, Logger: quietLogger()})
	r6 := NewResponder(ResponderConfig{Interface: "eth0", IPv6: true, VIPs: hashVIPs6, Table: NewClientTable(100, time.Hour), View: view, Logger: quietLogger()})
	reply := make([]byte, arpFrameLen)
	for _, tt := range []struct {
		name string
		f    func()
	}{
		{"arp answered", decideARPOnce(t, r, mine, reply)},
		{"arp not owner", decideARPOnce(t, r, theirs, reply)},
		{"ndp answered", decideNDPOnce(t, r6, mine6)},
		{"ndp not owner", decideNDPOnce(t, r6, theirs6)},
	} {
		if n := testing.AllocsPerRun(100, tt.f); n != 0 {
			t.Errorf("%s: %v allocations per frame, want 0", tt.name, n)
		}
	}
}

func decideARPOnce(t testing.TB, r *Responder, client netip.Addr, reply []byte) func() {
	frame := request(t, arp.OperationRequest, clientMAC, client, vip)
	mac := [6]byte(myMAC)
	now := time.Unix(100, 0)
	return func() {
		s := r.snap.Load()
		v := r.decideARP(s, frame, mac, now)
		r.count(s, v.vip, v.out)
		if v.send {
			arpReply(reply, frame, mac)
		}
	}
}

func decideNDPOnce(t testing.TB, r *Responder, client netip.Addr) func() {
	msg, err := ndp.MarshalMessage(&ndp.NeighborSolicitation{TargetAddress: vip6,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: clientMAC}}})
	if err != nil {
		t.Fatal(err)
	}
	mac := [6]byte(myMAC)
	now := time.Unix(100, 0)
	return func() {
		s := r.snap.Load()
		v := r.decideNDP(s, msg, 255, client, mac, now)
		r.count(s, v.vip, v.out)
	}
}

// BenchmarkDecideARP is the work per received ARP request, short of the
// system calls: parse, learn, decide, count, and build the reply.
func BenchmarkDecideARP(b *testing.B) {
	for _, tt := range []struct {
		name   string
		client netip.Addr
	}{{"answered", mine}, {"not_owner", theirs}} {
		b.Run(tt.name, func(b *testing.B) {
			r := NewResponder(ResponderConfig{Interface: "eth0", VIPs: hashVIPs, Table: NewClientTable(262144, time.Hour), View: view, Logger: quietLogger()})
			f := decideARPOnce(b, r, tt.client, make([]byte, arpFrameLen))
			b.ReportAllocs()
			for b.Loop() {
				f()
			}
		})
	}
}

// BenchmarkDecideARPCluster is BenchmarkDecideARP with 64 hosts eligible:
// the rendezvous hash scores every one of them.
func BenchmarkDecideARPCluster(b *testing.B) {
	var members []gossip.Member
	for i := range 64 {
		members = append(members, gossip.Member{Name: "host" + string(rune('a'+i/26)) + string(rune('a'+i%26)), State: gossip.StateAlive,
			Meta: gossip.Meta{Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: 1, VIPs: []netip.Addr{vip}}})
	}
	v := gossip.NewView("hostaa", members, 0)
	r := NewResponder(ResponderConfig{Interface: "eth0", VIPs: hashVIPs, Table: NewClientTable(262144, time.Hour), View: v, Logger: quietLogger()})
	f := decideARPOnce(b, r, mine, make([]byte, arpFrameLen))
	b.ReportAllocs()
	for b.Loop() {
		f()
	}
}

// BenchmarkDecideNDP is the same for a Neighbor Solicitation.
func BenchmarkDecideNDP(b *testing.B) {
	r := NewResponder(ResponderConfig{Interface: "eth0", IPv6: true, VIPs: hashVIPs6, Table: NewClientTable(262144, time.Hour), View: view, Logger: quietLogger()})
	f := decideNDPOnce(b, r, mine6)
	b.ReportAllocs()
	for b.Loop() {
		f()
	}
}

// BenchmarkLearnFlood is the table's work per request from a sender never
// seen before, with the table full: the cost of a flood.
func BenchmarkLearnFlood(b *testing.B) {
	tb := NewClientTable(65536, time.Hour)
	now := time.Unix(100, 0)
	b.ReportAllocs()
	i := uint32(0)
	for b.Loop() {
		i++
		tb.Learn(vip, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), clientMAC, now)
	}
}

// BenchmarkClientTableMemory reports the heap a full table takes, per
// client, at 100,000 and 1,000,000 clients (IPv4, one VIP).
func BenchmarkClientTableMemory(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var perClient float64
			for b.Loop() {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				tb := NewClientTable(n, time.Hour)
				now := time.Unix(100, 0)
				for i := range n {
					tb.Learn(vip, fake(i), clientMAC, now)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				perClient = float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
				runtime.KeepAlive(tb)
			}
			b.ReportMetric(perClient, "bytes/client")
		})
	}
}
