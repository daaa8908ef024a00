package arp

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func ip(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}) }

// A full table evicts a client on probation: in quiet times the one known
// longest (it had time to earn protection and did not); in a flood of new
// clients the newest, so that newcomers displace each other and not the
// clients known before, whatever their standing.
func TestClientTableEviction(t *testing.T) {
	t.Parallel()
	tb := NewClientTable(16, time.Hour)
	now := time.Unix(1000, 0)
	at := func(i int) time.Time { return now.Add(time.Duration(i) * 40 * time.Second) }
	for i := range 16 { // quietly: one new client every 40 s
		tb.Learn(vip, ip(i), clientMAC, at(i))
		if tb.Len() != i+1 {
			t.Fatalf("client %d not new: %d clients", i, tb.Len())
		}
	}
	tb.Learn(vip, ip(0), clientMAC, at(16))                 // asks again minutes later: protected
	tb.Learn(vip, ip(1), clientMAC, at(1).Add(time.Second)) // asks again soon: nothing earned
	tb.Learn(vip, ip(2), peerMAC, at(17))
	if c, _ := tb.Get(vip, ip(2)); c.MAC.String() != peerMAC.String() {
		t.Errorf("client 2 at %s after it changed MAC, want %s", c.MAC, peerMAC)
	}
	tb.Learn(vip, ip(16), clientMAC, at(18))
	if _, ok := tb.Get(vip, ip(1)); ok || tb.Len() != 16 {
		t.Errorf("%d clients; client 1, known longest without evidence, not evicted", tb.Len())
	}
	for _, i := range []int{0, 2, 15, 16} {
		if _, ok := tb.Get(vip, ip(i)); !ok {
			t.Errorf("client %d evicted", i)
		}
	}

	// A flood: a thousand new senders, each asking twice. Until it is
	// seen to be one (an eighth of the table's worth of new clients in a
	// minute), it evicts the clients known longest without evidence, 3
	// and 4; then only its own.
	flood := at(20)
	for i := range 1000 {
		tb.Learn(vip, fake(i), peerMAC, flood)
		tb.Learn(vip, fake(i), peerMAC, flood.Add(time.Second))
	}
	for i := range 17 {
		_, ok := tb.Get(vip, ip(i))
		if want := i != 1 && i != 3 && i != 4; ok != want {
			t.Errorf("client %d known %v after the flood, want %v", i, ok, want)
		}
	}
	if st := tb.Stats(); tb.Len() != 16 || st.Evicted != 1+1000 {
		t.Errorf("%d clients, %d evicted; want 16 and %d", tb.Len(), st.Evicted, 1+1000)
	}
	// Kept: the first (it came before the flood was seen) and the last.
	for i, want := range map[int]bool{0: true, 1: false, 2: false, 998: false, 999: true} {
		if _, ok := tb.Get(vip, fake(i)); ok != want {
			t.Errorf("made-up sender %d known %v, want %v", i, ok, want)
		}
	}

	// The same client of another VIP is another entry.
	other := netip.MustParseAddr("198.18.0.201")
	tb.Learn(other, ip(0), clientMAC, flood)
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
	if diff := cmp.Diff(want, added, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmpopts.IgnoreFields(Client{}, "FirstSeen")); diff != "" {
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

// A flood of spoofed senders, each asking twice, must not push out the real
// clients: those with evidence of a real machine behind them. Asking twice
// is none: it costs a flood nothing.
func TestClientTableFloodKeepsRealClients(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	later := now.Add(protectSpan)
	tb := NewClientTable(1024, time.Hour)
	peer := NewClientTable(1024, time.Hour)
	var real []netip.Addr
	for i := range 60 {
		c := ip(i)
		real = append(real, c)
		tb.Learn(vip, c, clientMAC, now)
		switch i % 3 {
		case 0: // asks again, minutes later
			tb.Learn(vip, c, clientMAC, later)
		case 1: // answers this host's re-pointing request
			tb.Asked(vip, c, now.Add(time.Second))
			tb.Confirm(vip, c, clientMAC, now.Add(2*time.Second))
		case 2: // asked its owner again, minutes later; heard once here
			peer.Learn(vip, c, clientMAC, now)
			peer.Learn(vip, c, clientMAC, later)
		}
	}
	if _, err := tb.Merge(peer.Encode(later, time.Time{}), later); err != nil {
		t.Fatal(err)
	}
	flood := later.Add(time.Second)
	for i := range 200_000 {
		tb.Learn(vip, fake(i), peerMAC, flood)
		tb.Learn(vip, fake(i), peerMAC, flood.Add(time.Second))
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

// What protects a client: an answer to a request this host sent it, from
// the MAC asked, soon after; being seen again minutes after it was first
// seen. What does not: asking again soon, an answer nobody asked for, an
// answer from another MAC or too late.
func TestClientTableEvidence(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	for _, tt := range []struct {
		name string
		do   func(tb *ClientTable, c netip.Addr)
		want bool
	}{
		{"asks again soon", func(tb *ClientTable, c netip.Addr) { tb.Learn(vip, c, clientMAC, now.Add(time.Minute)) }, false},
		{"asks again by broadcast, soon", func(tb *ClientTable, c netip.Addr) { tb.LearnBroadcast(vip, c, clientMAC, now.Add(time.Minute)) }, false},
		{"asks again minutes later", func(tb *ClientTable, c netip.Addr) { tb.LearnBroadcast(vip, c, clientMAC, now.Add(protectSpan)) }, true},
		{"answers unasked", func(tb *ClientTable, c netip.Addr) { tb.Confirm(vip, c, clientMAC, now.Add(time.Second)) }, false},
		{"answers when asked", func(tb *ClientTable, c netip.Addr) {
			tb.Asked(vip, c, now.Add(time.Second))
			tb.Confirm(vip, c, clientMAC, now.Add(2*time.Second))
		}, true},
		{"answers from another MAC", func(tb *ClientTable, c netip.Addr) {
			tb.Asked(vip, c, now.Add(time.Second))
			tb.Confirm(vip, c, peerMAC, now.Add(2*time.Second))
		}, false},
		{"answers too late", func(tb *ClientTable, c netip.Addr) {
			tb.Asked(vip, c, now.Add(time.Second))
			tb.Confirm(vip, c, clientMAC, now.Add(time.Second+confirmWindow+time.Second))
		}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tb := NewClientTable(10, time.Hour)
			tb.Learn(vip, mine, clientMAC, now)
			tt.do(tb, mine)
			if got := tb.Protected(vip, mine); got != tt.want {
				t.Errorf("protected = %v, want %v", got, tt.want)
			}
		})
	}
}

// Nothing that is not one machine's is learned: a broadcast, multicast
// or zero MAC, or an address no machine has.
func TestClientTableLearnsUnicastOnly(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	tb := NewClientTable(10, time.Hour)
	for _, mac := range []net.HardwareAddr{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, {0x01, 0, 0x5e, 0, 0, 1}, {0x33, 0x33, 0, 0, 0, 1}, {0, 0, 0, 0, 0, 0}, {2, 0, 0}} {
		tb.Learn(vip, mine, mac, now)
		tb.LearnBroadcast(vip, mine, mac, now)
		tb.Confirm(vip, mine, mac, now)
	}
	for _, a := range []string{"0.0.0.0", "255.255.255.255", "224.0.0.1", "127.0.0.1", "ff02::1", "::", "::1"} {
		tb.Learn(vip, netip.MustParseAddr(a), clientMAC, now)
	}
	if n := tb.Len(); n != 0 {
		t.Errorf("learned %d clients: %+v", n, tb.Clients())
	}
}

// Time in the table is monotonic: a client learned with the clock's
// reading is not expired by a wall-clock step, however large, nor is a
// later sighting taken for an earlier one.
func TestClientTableMonotonic(t *testing.T) {
	t.Parallel()
	tb := NewClientTable(10, 4*time.Hour)
	now := time.Now()
	tb.Learn(vip, mine, clientMAC, now)
	tb.Learn(vip, theirs, clientMAC, now.Add(time.Second))
	// The table's times are offsets by the monotonic clock: its own
	// reading of the start, and the readings now carries.
	c, _ := tb.Get(vip, mine)
	if d := c.LastSeen.Sub(now); d != 0 {
		t.Errorf("last seen %v off", d)
	}
	// What the table gives back carries a monotonic reading (Round(0)
	// strips it), so comparing it with time.Now() is immune to steps too.
	if c.LastSeen == c.LastSeen.Round(0) || c.FirstSeen == c.FirstSeen.Round(0) {
		t.Errorf("last seen %v, first seen %v: wall clock only", c.LastSeen, c.FirstSeen)
	}
	if n := tb.Expire(now.Add(time.Minute)); n != 0 {
		t.Errorf("expired %d clients a minute on", n)
	}
	if n := tb.Expire(now.Add(4*time.Hour + 500*time.Millisecond)); n != 1 {
		t.Errorf("expired %d clients after the ttl, want the first", n)
	}
}

// A peer's table is taken within bounds: clients of served VIPs only, with
// unicast MACs and addresses, at most the table's capacity of entries and
// of protected ones, each refusal counted by reason.
func TestClientTableMergeBounded(t *testing.T) {
	t.Parallel()
	now := time.Unix(100_000, 0)
	other := netip.MustParseAddr("198.18.0.201")
	src := NewClientTable(100, time.Hour)
	for i := range 20 {
		src.Learn(vip, ip(i), clientMAC, now)
		src.Protect(vip, ip(i))
	}
	src.Learn(other, ip(1), clientMAC, now)
	b := src.Encode(now, time.Time{})
	// A MAC and an address no machine has, written into the wire form:
	// Learn refuses them, a peer might not.
	bad := append([]byte(nil), b...)
	first := 3 + 16*2
	copy(bad[first+7:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(bad[first+entrySize4+3:], []byte{224, 0, 0, 1})

	dst := NewClientTable(8, time.Hour)
	dst.Serve([]netip.Addr{vip})
	if _, err := dst.Merge(bad, now); err != nil {
		t.Fatal(err)
	}
	st := dst.Stats()
	want := map[MergeReject]uint64{RejectVIP: 1, RejectMAC: 1, RejectAddress: 1, RejectTooMany: 10, RejectProtected: 1}
	if diff := cmp.Diff(want, st.Rejected); diff != "" {
		t.Errorf("rejected (-want +got):\n%s", diff)
	}
	if dst.Len() != 8 || st.Protected != 7 {
		t.Errorf("%d clients, %d protected; want 8 and 7", dst.Len(), st.Protected)
	}
	if _, ok := dst.Get(other, ip(1)); ok {
		t.Error("took a client of a VIP not served")
	}

	many := []byte{tableWireVersion, 0xff, 0xff}
	if _, err := dst.Merge(many, now); err == nil || dst.Stats().Rejected[RejectVIPCount] != 1 {
		t.Errorf("65535 VIPs: %v, counted %d", err, dst.Stats().Rejected[RejectVIPCount])
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
	tb.Learn(vip, ip(3), clientMAC, t0.Add(time.Second)) // asks again, soon: nothing new
	t1 := t0.Add(time.Minute)
	tb.Learn(vip, ip(1), peerMAC, t1)                             // new MAC
	tb.Protect(vip, ip(2))                                        // newly protected (now, real time)
	tb.Learn(vip, ip(3), clientMAC, t1.Add(time.Second))          // seen again soon: not worth it
	tb.Learn(vip, ip(4), clientMAC, t0.Add(time.Hour))            // seen again much later: protected too
	tb.Learn(vip, ip(20), clientMAC, t1)                          // new: every host heard its first request
	tb.LearnBroadcast(vip, ip(5), clientMAC, t0.Add(protectSpan)) // asks again by broadcast, minutes later: every host heard it

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
		t.Error("a client that asked again by broadcast minutes later is not protected")
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
		tb.Protect(vip, ip(i)) // a change
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

// The kernel fast path is given the settled clients of a VIP only: those
// that asked again, or that are protected.
func TestClientTableAppendSettled(t *testing.T) {
	t.Parallel()
	tb := NewClientTable(10, time.Hour)
	now := time.Unix(1000, 0)
	other := netip.MustParseAddr("198.18.0.201")
	for i := range 4 {
		tb.LearnBroadcast(vip, ip(i), clientMAC, now)
	}
	tb.LearnBroadcast(vip, ip(1), clientMAC, now.Add(time.Second)) // asks again
	tb.Learn(vip, ip(2), clientMAC, now.Add(time.Second))          // again, by unicast
	tb.Protect(vip, ip(3))                                         // protected
	tb.Learn(other, ip(1), clientMAC, now)
	tb.Learn(other, ip(1), clientMAC, now.Add(time.Second)) // protected, for the other VIP
	got := tb.AppendSettled(nil, vip)
	slices.SortFunc(got, func(a, b Known) int { return a.IP.Compare(b.IP) })
	want := []Known{{ip(1), [6]byte(clientMAC)}, {ip(2), [6]byte(clientMAC)}, {ip(3), [6]byte(clientMAC)}}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("settled clients of %s (-want +got):\n%s", vip, d)
	}
}

// TestClientTableMergeV1: a peer of the first builds sends wire version 1
// (absolute times): its clients are taken, with their ages; a version
// beyond the range is refused, naming what this build reads.
func TestClientTableMergeV1(t *testing.T) {
	t.Parallel()
	now := time.UnixMilli(1_000_000_000)
	v6 := netip.MustParseAddr("fd00::200")
	c6 := netip.MustParseAddr("fd00::1:1")
	v1 := []byte{1}
	for _, c := range []struct {
		vip, ip netip.Addr
		seen    time.Time
	}{{vip, ip(1), now.Add(-time.Minute)}, {v6, c6, now.Add(-2 * time.Minute)}, {vip, ip(2), now.Add(-3 * time.Hour)}} {
		a, b := c.vip.As16(), c.ip.As16()
		v1 = append(append(append(v1, a[:]...), b[:]...), clientMAC...)
		v1 = binary.BigEndian.AppendUint64(v1, uint64(c.seen.UnixMilli()))
	}
	dst := NewClientTable(10, time.Hour)
	added, err := dst.Merge(v1, now)
	if err != nil {
		t.Fatal(err)
	}
	want := []Client{
		{VIP: vip, IP: ip(1), MAC: clientMAC, LastSeen: now.Add(-time.Minute)},
		{VIP: v6, IP: c6, MAC: clientMAC, LastSeen: now.Add(-2 * time.Minute)},
	}
	if diff := cmp.Diff(want, added, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }), cmpopts.IgnoreFields(Client{}, "FirstSeen")); diff != "" {
		t.Errorf("added from version 1 (-want +got):\n%s", diff)
	}
	if _, err := dst.Merge(v1[:len(v1)-1], now); !errors.Is(err, errTruncated) {
		t.Errorf("truncated version 1: %v", err)
	}
	if _, err := dst.Merge([]byte{3, 0, 0}, now); !errors.Is(err, errWireVersion) || !strings.Contains(err.Error(), "version 3, this build reads versions 1 to 2") {
		t.Errorf("version 3: %v", err)
	}
}
