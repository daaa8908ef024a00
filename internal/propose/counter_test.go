package propose

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var (
	vip     = netip.MustParseAddr("198.18.0.200")
	router  = [6]byte{0x02, 0, 0, 0, 0, 0xfe}
	client  = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	peer    = [6]byte{0x02, 0, 0, 0, 0, 0x11}
	src     = func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 19, 1, byte(i)}) }
	routerA = netip.MustParseAddr("198.18.0.254")
)

// clock is a counter's time, moved by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }

// newTestCounter is a counter on c's time that counts its lookups, where
// the router answers to routerA, and routerA is listed while *listed.
func newTestCounter(c *clock, lookups *int, listed *bool) *Counter {
	n := NewCounter(func(v netip.Addr, mac [6]byte) []netip.Addr {
		*lookups++
		if v == vip && mac == router {
			return []netip.Addr{routerA}
		}
		return nil
	}, func(_ netip.Addr, _ [6]byte, addrs []netip.Addr) bool {
		return *listed && slices.Contains(addrs, routerA)
	})
	n.now = c.now
	return n
}

func macs(ps []Proposal) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.MAC)
	}
	return out
}

// A neighbour is proposed once Threshold distinct sources came through it;
// repeats of one source (an on-segment client's many connections) do not
// count, nor do a member's frames.
func TestCounterProposes(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	lookups, listed := 0, false
	n := newTestCounter(c, &lookups, &listed)
	n.SetPeers(map[[6]byte]bool{peer: true})
	for range 50 {
		n.Observe(vip, client, src(200))
	}
	for i := range Threshold - 1 {
		n.Observe(vip, router, src(i))
		n.Observe(vip, peer, src(i))
		n.Observe(vip, peer, src(i+10))
	}
	if got := n.Proposed(vip); len(got) != 0 || lookups != 0 {
		t.Fatalf("proposed %v (%d lookups) before %d sources", macs(got), lookups, Threshold)
	}
	n.Observe(vip, router, src(Threshold-1))
	n.Observe(vip, router, src(0)) // again: no new lookup
	want := []Proposal{{Addresses: []netip.Addr{routerA}, MAC: "02:00:00:00:00:fe", Sources: Threshold, LastSeen: c.t}}
	if diff := cmp.Diff(want, n.Proposed(vip), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("proposals (-want +got):\n%s", diff)
	}
	if lookups != 1 {
		t.Errorf("%d address lookups, want 1", lookups)
	}
	if got := n.Proposed(netip.MustParseAddr("198.18.0.201")); len(got) != 0 {
		t.Errorf("another VIP has proposals %v", macs(got))
	}
	wantCounts := map[string]uint64{Counted: 50 + Threshold + 1, FromCluster: 2 * (Threshold - 1)}
	if diff := cmp.Diff(wantCounts, n.Counts()); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	c.add(Forget)
	if got := n.Proposed(vip); len(got) != 0 {
		t.Errorf("proposal %v kept after %s unseen", macs(got), Forget)
	}
}

// A proposed neighbour whose address is not known yet is looked up again,
// at most once a minute.
func TestCounterLooksUpAgain(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	lookups, listed := 0, false
	n := newTestCounter(c, &lookups, &listed)
	other := [6]byte{0x02, 0, 0, 0, 0, 0xfd} // never asked for the VIP
	for i := range 3 * Threshold {
		n.Observe(vip, other, src(i))
	}
	c.add(lookupEvery - time.Second)
	n.Observe(vip, other, src(1))
	if lookups != 1 {
		t.Fatalf("%d lookups within a minute, want 1", lookups)
	}
	c.add(time.Second)
	n.Observe(vip, other, src(1))
	if lookups != 2 {
		t.Errorf("%d lookups after a minute, want 2", lookups)
	}
	if got := n.Proposed(vip); len(got) != 1 || len(got[0].Addresses) != 0 {
		t.Errorf("proposals %+v, want one without an address", got)
	}
}

// The counter counts at most Rate segments a second, refilled as time
// passes, and holds at most MaxNeighbours, taking the place of one
// forgotten.
func TestCounterBounds(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	lookups, listed := 0, false
	n := newTestCounter(c, &lookups, &listed)
	for i := range Rate + 10 {
		n.Observe(vip, client, src(i%250))
	}
	if got := n.Counts()[RateLimited]; got != 10 {
		t.Errorf("%d rate limited of %d at once, want 10", got, Rate+10)
	}
	c.add(time.Second / 2)
	for range Rate {
		n.Observe(vip, client, src(1))
	}
	if got := n.Counts()[RateLimited]; got != 10+Rate/2 {
		t.Errorf("%d rate limited after half a second more, want %d", got, 10+Rate/2)
	}

	n = newTestCounter(c, &lookups, &listed)
	mac := func(i int) [6]byte { return [6]byte{0x02, 1, 0, 0, byte(i >> 8), byte(i)} }
	for i := range MaxNeighbours + 1 {
		c.add(time.Second) // under the rate
		n.Observe(vip, mac(i), src(1))
	}
	if got := n.Counts()[TableFull]; got != 1 || len(n.seen) != MaxNeighbours {
		t.Fatalf("%d table_full, %d held; want 1 and %d", got, len(n.seen), MaxNeighbours)
	}
	c.add(Forget - time.Duration(MaxNeighbours)*time.Second) // the first is forgotten, the second not
	n.Observe(vip, mac(MaxNeighbours+1), src(1))
	n.Observe(vip, mac(MaxNeighbours+2), src(1))
	if got := n.Counts()[TableFull]; got != 2 {
		t.Errorf("%d table_full, want 2: one forgotten neighbour makes room for one", got)
	}
	if _, ok := n.seen[key{vip, mac(0)}]; ok {
		t.Errorf("the forgotten neighbour is still held")
	}
}

// A router the VIP lists is not proposed, and once known as such its
// segments are counted as listed, before the rate: a busy listed router
// leaves the rate to the others. A reload looks again.
func TestCounterListed(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	lookups, listed := 0, true
	n := newTestCounter(c, &lookups, &listed)
	for i := range 2 * Rate {
		n.Observe(vip, router, src(i%250))
	}
	if got := n.Proposed(vip); len(got) != 0 {
		t.Errorf("a listed router is proposed: %v", macs(got))
	}
	counts := n.Counts()
	if counts[Counted] != Threshold || counts[Listed] != 2*Rate-Threshold || counts[RateLimited] != 0 {
		t.Errorf("counts %v, want %d counted and the rest listed", counts, Threshold)
	}
	listed = false // the router is taken out of vip.routers
	n.Reset(map[netip.Addr]bool{vip: true})
	n.Observe(vip, router, src(1))
	if got := n.Proposed(vip); len(got) != 1 {
		t.Errorf("after a reload that unlists it, proposals %v, want the router", macs(got))
	}
	n.Reset(map[netip.Addr]bool{})
	if got := n.Proposed(vip); len(got) != 0 {
		t.Errorf("after a reload without the VIP, proposals %v", macs(got))
	}
}
