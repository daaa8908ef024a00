package repoint

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/arp/policy"
)

// TestReassertOrder: the periodic round goes in order of evidence, as
// failover does (protected clients first, most recently seen first; then
// the others, known longest first), one packet each; a packet that cannot
// be sent is tried again, in its turn, and the round ends once every
// client had its packet.
func TestReassertOrder(t *testing.T) {
	t.Parallel()
	table := arp.NewClientTable(1000, time.Hour)
	ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}) }
	for i := range 10 { // client i was first seen at 500+i
		table.Learn(testVIP, ip(i), net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}, time.Unix(500+int64(i), 0))
	}
	for _, i := range []int{4, 8} {
		table.Protect(testVIP, ip(i))
	}
	table.Learn(testVIP, ip(4), net.HardwareAddr{2, 0, 0, 0, 1, 4}, time.Unix(600, 0)) // seen last
	failures := 2
	var order []netip.Addr
	r := New(Config{
		Table: table, VIPs: served(policy.Hash), Logger: quietLog(), Rate: 5000,
		Reassert: time.Minute, ReassertRate: 50,
		Send: fakeSender{repoint: func(_ netip.Addr, c arp.Client) error {
			if c.IP == ip(0) && failures > 0 {
				failures--
				return errors.New("interface down")
			}
			order = append(order, c.IP)
			return nil
		}},
	})
	alone := view("h1", "h1")
	r.last = alone
	now := time.Unix(1000, 0)
	r.reassert(alone, now)
	if st := r.Status(); r.slow == nil || len(r.slow.items) != 10 {
		t.Fatalf("the round holds %+v, want the 10 clients (status %+v)", r.slow, st)
	}
	run(r, alone, now, 2*time.Minute)
	// 0 is the first without evidence: its two failures take its turn's
	// budget (a packet every 6 s: 10 clients over the minute), then it goes.
	want := []netip.Addr{ip(4), ip(8), ip(0), ip(1), ip(2), ip(3), ip(5), ip(6), ip(7), ip(9)}
	if !slices.Equal(order, want) {
		t.Errorf("periodic round went %v, want %v", order, want)
	}
	if st := r.Status(); st.Reasserting != 0 || r.slow != nil || len(r.pending) != 0 {
		t.Errorf("status %+v, %d pending: want the round over", st, len(r.pending))
	}
}

// TestReassertSkipsMoved: a client queued at the full rate while the
// periodic round runs (a settle here) gets no packet of the round after
// that: the round skips it, as it dropped it from its queue before.
func TestReassertSkipsMoved(t *testing.T) {
	t.Parallel()
	const clients = 40
	table := pacingTable(clients)
	alone := view("h1", "h1")
	var now time.Time
	sent := map[netip.Addr][]time.Time{}
	r := New(Config{
		Table: table, VIPs: served(policy.Hash), Logger: quietLog(), Rate: 5000,
		Reassert: time.Minute, ReassertRate: 5,
		Send: fakeSender{repoint: func(_ netip.Addr, c arp.Client) error { sent[c.IP] = append(sent[c.IP], now); return nil }},
	})
	r.last = alone
	now = time.Unix(1000, 0)
	r.reassert(alone, now)
	now = run(r, alone, now, 2*time.Second)
	settled := now
	r.unsettled[testVIP], r.settleAt = true, now
	run(r, alone, now, 2*time.Minute)
	early := 0
	for c := range table.All() {
		var after []time.Time
		for _, at := range sent[c.IP] {
			if !at.Before(settled) {
				after = append(after, at)
			} else {
				early++
			}
		}
		if len(after) != 1 {
			t.Errorf("client %s: packets at %v after the settle at %v, want its one", c.IP, after, settled)
		}
	}
	if early == 0 || early == clients {
		t.Fatalf("%d clients had their periodic packet before the settle; the test proves nothing", early)
	}
}
