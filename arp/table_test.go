package arp

import (
	"net/netip"
	"slices"
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
		tb.Learn(vip, ip(i), clientMAC, now.Add(time.Duration(i)*time.Second))
		if tb.Len() != i+1 {
			t.Fatalf("client %d not new: %d clients", i, tb.Len())
		}
	}
	// Seeing client 0 again makes client 1 the least recently seen.
	tb.Learn(vip, ip(0), clientMAC, now.Add(10*time.Second))
	if tb.Len() != 3 {
		t.Errorf("same client learned again: %d clients, want 3", tb.Len())
	}
	tb.Learn(vip, ip(0), peerMAC, now.Add(11*time.Second))
	if c, _ := tb.Get(vip, ip(0)); c.MAC.String() != peerMAC.String() {
		t.Errorf("client 0 at %s after it changed MAC, want %s", c.MAC, peerMAC)
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

func fake(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// A flood of spoofed senders, each seen once, must not push out the real
// clients: those that asked again, those this host answers, and those a
// peer marks protected.
func TestClientTableFloodKeepsRealClients(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	tb := NewClientTable(1024, time.Hour)
	peer := NewClientTable(1024, time.Hour)
	var real []netip.Addr
	for i := range 60 {
		c := ip(i)
		real = append(real, c)
		switch i % 3 {
		case 0: // asks again
			tb.Learn(vip, c, clientMAC, now)
			tb.Learn(vip, c, clientMAC, now.Add(time.Second))
		case 1: // re-pointed by this host
			tb.Learn(vip, c, clientMAC, now)
			tb.Protect(vip, c)
		case 2: // asked its owner again, heard once here
			tb.Learn(vip, c, clientMAC, now)
			peer.Learn(vip, c, clientMAC, now)
			peer.Learn(vip, c, clientMAC, now.Add(30*time.Second))
		}
	}
	if _, err := tb.Merge(peer.Encode(now, time.Time{}), now); err != nil {
		t.Fatal(err)
	}
	for i := range 200_000 {
		tb.Learn(vip, fake(i), peerMAC, now.Add(2*time.Second))
	}
	for _, c := range real {
		if !tb.Protected(vip, c) {
			t.Errorf("real client %s lost to the flood", c)
		}
	}
	st := tb.Stats()
	if tb.Len() != 1024 || st.Protected != 60 || st.Evicted != 200_000+60-1024 {
		t.Errorf("Len %d, stats %+v; want 1024 clients, 60 protected, %d evicted", tb.Len(), st, 200_000+60-1024)
	}
}

// The protected list holds at most 7/8 of the table, so that new clients
// always have room on probation.
func TestClientTableProtectedIsCapped(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	tb := NewClientTable(16, time.Hour)
	for i := range 32 {
		tb.Learn(vip, ip(i), clientMAC, now)
		tb.Protect(vip, ip(i))
	}
	if st := tb.Stats(); st.Protected != 14 || st.Probation != 2 {
		t.Errorf("stats %+v, want 14 protected and 2 on probation", st)
	}
	// The most recently protected are kept.
	if !tb.Protected(vip, ip(31)) || tb.Protected(vip, ip(0)) {
		t.Error("protected the wrong clients")
	}
}

// Encode with a since sends only what changed: new clients, new MACs,
// newly protected clients, and a last-seen time that moved a lot.
func TestClientTableEncodeChanges(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(100_000, 0)
	tb := NewClientTable(100, 8*time.Hour)
	for i := range 10 {
		tb.Learn(vip, ip(i), clientMAC, t0)
	}
	tb.Learn(vip, ip(3), clientMAC, t0.Add(time.Second)) // asks again: protected
	t1 := t0.Add(time.Minute)
	tb.Learn(vip, ip(1), peerMAC, t1)                             // new MAC
	tb.Protect(vip, ip(2))                                        // newly protected (now, real time)
	tb.Learn(vip, ip(3), clientMAC, t1.Add(time.Second))          // seen again soon: not worth it
	tb.Learn(vip, ip(4), clientMAC, t0.Add(time.Hour))            // seen again much later
	tb.Learn(vip, ip(20), clientMAC, t1)                          // new: every host heard its first request
	tb.LearnBroadcast(vip, ip(5), clientMAC, t1.Add(time.Second)) // asks again by broadcast: every host heard it

	dst := NewClientTable(100, 8*time.Hour)
	added, err := dst.Merge(tb.Encode(t0.Add(time.Hour), t1), t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var got []netip.Addr
	for _, c := range added {
		got = append(got, c.IP)
	}
	slices.SortFunc(got, netip.Addr.Compare)
	want := []netip.Addr{ip(1), ip(2), ip(4)}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("changes sent (-want +got):\n%s", diff)
	}
	if !dst.Protected(vip, ip(2)) {
		t.Error("protection did not travel")
	}
	if !tb.Protected(vip, ip(5)) {
		t.Error("a client that asked again by broadcast is not protected")
	}
	if c, _ := dst.Get(vip, ip(1)); c.MAC.String() != peerMAC.String() {
		t.Errorf("client 1's MAC %s, want %s", c.MAC, peerMAC)
	}
	if full := len(tb.Encode(t1, time.Time{})); full != 3+16+11*entrySize4 {
		t.Errorf("whole table is %d bytes, want %d", full, 3+16+11*entrySize4)
	}

	// A whole table (a join) is not passed on; changes are.
	later := t0.Add(2 * time.Hour)
	joined := NewClientTable(100, 8*time.Hour)
	joined.Merge(tb.Encode(later, time.Time{}), later)
	if n := joined.Len(); n != 11 {
		t.Errorf("joined host knows %d clients, want 11", n)
	}
	if b := joined.Encode(later, later.Add(-time.Second)); len(b) != 3+16 {
		t.Errorf("joined host passes on %d bytes, want none", len(b)-3-16)
	}
	relay := NewClientTable(100, 8*time.Hour)
	relay.MergeChanges(tb.Encode(later, t1), later)
	if b := relay.Encode(later, later.Add(-time.Second)); len(b) != 3+16+3*entrySize4 {
		t.Errorf("relaying host passes on %d bytes, want 3 clients", len(b)-3-16)
	}
}

// EncodeAtMost bounds what one exchange carries, and the next exchange
// carries the rest.
func TestClientTableEncodeAtMost(t *testing.T) {
	t.Parallel()
	now := time.Unix(100_000, 0)
	tb := NewClientTable(100, time.Hour)
	for i := range 50 {
		tb.Learn(vip, ip(i), clientMAC, now)
		tb.Learn(vip, ip(i), clientMAC, now.Add(time.Second)) // protected: a change
	}
	const limit = 3 + 16 + 20*entrySize4
	seen := map[netip.Addr]bool{}
	for range 3 {
		b := tb.EncodeAtMost(now, now.Add(-time.Minute), limit)
		if len(b) > limit {
			t.Fatalf("encoded %d bytes, limit %d", len(b), limit)
		}
		dst := NewClientTable(100, time.Hour)
		added, err := dst.Merge(b, now)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range added {
			seen[c.IP] = true
		}
	}
	if len(seen) != 50 {
		t.Errorf("three bounded exchanges carried %d of 50 changes", len(seen))
	}
}

// The kernel fast path is given the protected clients of a VIP only: those
// that asked again, or that this host re-pointed.
func TestClientTableAppendProtected(t *testing.T) {
	t.Parallel()
	tb := NewClientTable(10, time.Hour)
	now := time.Unix(1000, 0)
	other := netip.MustParseAddr("198.18.0.201")
	for i := range 4 {
		tb.LearnBroadcast(vip, ip(i), clientMAC, now)
	}
	tb.LearnBroadcast(vip, ip(1), clientMAC, now.Add(time.Second)) // asks again
	tb.Learn(vip, ip(2), clientMAC, now.Add(time.Second))          // again, by unicast
	tb.Protect(vip, ip(3))                                         // re-pointed
	tb.Learn(other, ip(1), clientMAC, now)
	tb.Learn(other, ip(1), clientMAC, now.Add(time.Second)) // protected, for the other VIP
	got := tb.AppendProtected(nil, vip)
	slices.SortFunc(got, func(a, b Known) int { return a.IP.Compare(b.IP) })
	want := []Known{{ip(1), [6]byte(clientMAC)}, {ip(2), [6]byte(clientMAC)}, {ip(3), [6]byte(clientMAC)}}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("protected clients of %s (-want +got):\n%s", vip, d)
	}
}
