package arp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func ip(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}) }

func TestClientTableLRU(t *testing.T) {
	t.Parallel()
	tb := NewClientTable(3, time.Hour)
	now := time.Unix(1000, 0)
	for i := range 3 {
		if !tb.Learn(vip, ip(i), clientMAC, now.Add(time.Duration(i)*time.Second)) {
			t.Fatalf("client %d not new", i)
		}
	}
	// Seeing client 0 again makes client 1 the least recently seen.
	if tb.Learn(vip, ip(0), clientMAC, now.Add(10*time.Second)) {
		t.Error("same client, same MAC reported as changed")
	}
	if !tb.Learn(vip, ip(0), peerMAC, now.Add(11*time.Second)) {
		t.Error("new MAC not reported as changed")
	}
	tb.Learn(vip, ip(3), clientMAC, now.Add(12*time.Second))
	if _, ok := tb.Get(vip, ip(1)); ok {
		t.Error("least recently seen client 1 not evicted")
	}
	if tb.Len() != 3 {
		t.Errorf("Len = %d, want 3", tb.Len())
	}
	// The same client of another VIP is another entry.
	other := netip.MustParseAddr("198.18.0.201")
	tb.Learn(other, ip(0), clientMAC, now.Add(13*time.Second))
	if _, ok := tb.Get(vip, ip(0)); !ok {
		t.Error("client 0 of the first VIP lost")
	}
}

func TestClientTableExpire(t *testing.T) {
	t.Parallel()
	tb := NewClientTable(10, time.Minute)
	now := time.Unix(1000, 0)
	tb.Learn(vip, ip(1), clientMAC, now)
	tb.Learn(vip, ip(2), clientMAC, now.Add(50*time.Second))
	if n := tb.Expire(now.Add(70 * time.Second)); n != 1 {
		t.Errorf("Expire removed %d, want 1", n)
	}
	if _, ok := tb.Get(vip, ip(2)); !ok {
		t.Error("fresh client expired")
	}
}

func TestClientTableMerge(t *testing.T) {
	t.Parallel()
	now := time.UnixMilli(1_000_000)
	src := NewClientTable(10, time.Hour)
	src.Learn(vip, ip(1), clientMAC, now.Add(-time.Minute))
	src.Learn(vip, ip(2), peerMAC, now.Add(-2*time.Hour)) // too old to share
	src.Learn(vip, ip(3), clientMAC, now)
	b := src.Encode(now, time.Time{})

	dst := NewClientTable(10, time.Hour)
	dst.Learn(vip, ip(3), clientMAC, now)
	added, err := dst.Merge(b, now)
	if err != nil {
		t.Fatal(err)
	}
	want := []Client{{VIP: vip, IP: ip(1), MAC: clientMAC, LastSeen: now.Add(-time.Minute)}}
	if diff := cmp.Diff(want, added, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("added (-want +got):\n%s", diff)
	}
	if dst.Len() != 2 {
		t.Errorf("Len = %d, want 2", dst.Len())
	}

	for _, bad := range [][]byte{{9}, {1, 2, 3}} {
		if _, err := dst.Merge(bad, now); err == nil {
			t.Errorf("Merge(%x) accepted garbage", bad)
		}
	}
}
