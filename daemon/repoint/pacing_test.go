package repoint

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/arp/policy"
)

// maxPerSecond is the most packets sent in any one-second window.
func maxPerSecond(times []time.Time) int {
	most := 0
	for i := range times {
		n := 0
		for j := i; j < len(times) && times[j].Sub(times[i]) < time.Second; j++ {
			n++
		}
		most = max(most, n)
	}
	return most
}

func pacingTable(n int) *arp.ClientTable {
	table := arp.NewClientTable(1000, time.Hour)
	for i := range n {
		table.Learn(testVIP, netip.AddrFrom4([4]byte{198, 18, 1 + byte(i/250), byte(i % 250)}), net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}, time.Unix(500, 0))
	}
	return table
}

// TestReassertPaced: the periodic round keeps to node.reassert_rate,
// whatever repoint_rate allows, and is spread over the interval when that
// is slower; a failover during the round goes at the full rate.
func TestReassertPaced(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		clients  int
		interval time.Duration
		rate     int
		wantMost int // packets in any second
		// the round lasts this long, give or take a tick a packet
		wantTaken time.Duration
	}{
		{"capped by the rate", 200, 20 * time.Second, 5, 5, 199 * time.Second / 5},
		{"spread over the interval", 30, time.Minute, 5, 1, 29 * 2 * time.Second},
	} {
		table := pacingTable(tt.clients)
		alone := view("h1", "h1")
		var at []time.Time
		var now time.Time
		r := New(Config{
			Table: table, VIPs: served(policy.Hash), Logger: quietLog(), Rate: 5000,
			Reassert: tt.interval, ReassertRate: tt.rate,
			Send: fakeSender{repoint: func(netip.Addr, arp.Client) error { at = append(at, now); return nil }},
		})
		r.last = alone
		now = time.Unix(1000, 0)
		r.reassert(alone, now)
		for end := now.Add(2 * time.Minute); now.Before(end); {
			now = now.Add(repointTick)
			r.round(alone, now)
		}
		if len(at) != tt.clients {
			t.Fatalf("%s: %d packets, want one for each of %d clients", tt.name, len(at), tt.clients)
		}
		if got := maxPerSecond(at); got > tt.wantMost {
			t.Errorf("%s: %d packets in one second, want at most %d", tt.name, got, tt.wantMost)
		}
		slop := time.Duration(tt.clients) * repointTick
		if took := at[len(at)-1].Sub(at[0]); took < tt.wantTaken || took > tt.wantTaken+slop {
			t.Errorf("%s: the round took %s, want %s", tt.name, took, tt.wantTaken)
		}
	}
}

// TestFailoverOvertakesReassert: clients that move to this host during a
// slow periodic round are re-pointed at repoint_rate, not at its pace.
func TestFailoverOvertakesReassert(t *testing.T) {
	t.Parallel()
	table := pacingTable(200)
	all, noH2 := view("h1", "h1", "h2"), view("h1", "h1")
	var now time.Time
	sent := map[netip.Addr][]time.Time{}
	r := New(Config{
		Table: table, VIPs: served(policy.Hash), Logger: quietLog(), Rate: 5000,
		Reassert: time.Minute, ReassertRate: 5,
		Send: fakeSender{repoint: func(_ netip.Addr, c arp.Client) error { sent[c.IP] = append(sent[c.IP], now); return nil }},
	})
	r.last = all
	now = time.Unix(1000, 0)
	r.reassert(all, now)
	now = run(r, all, now, time.Second)
	start := now
	r.plan(noH2, table.All(), now)
	now = run(r, noH2, now, 1500*time.Millisecond) // before the settle, settleDelay after the change
	moved := 0
	for _, c := range table.Clients() {
		if policy.Of(policy.Hash).Owner(all, testVIP, c.IP) != "h2" {
			continue
		}
		moved++
		var after []time.Time
		for _, at := range sent[c.IP] {
			if !at.Before(start) {
				after = append(after, at)
			}
		}
		if len(after) != repointRounds || after[0].Sub(start) > 100*time.Millisecond {
			t.Errorf("client %s of h2: packets at %v after the failover at %v, want %d from the start", c.IP, after, start, repointRounds)
		}
	}
	if moved == 0 {
		t.Fatal("h2 owned no client; the test proves nothing")
	}
	if st := r.Status(); st.Reasserting == 0 || st.ReassertRate > 5 {
		t.Errorf("status %+v: want the periodic round still going, at 5 packets/s at most", st)
	}
}

// TestRefutationsRateLimited: a stream of refutations (one every 300 ms for
// 30 s) re-asserts once, settleDelay after the first, then at most once per
// refuteEvery: neither a round per refutation nor one postponed for ever.
func TestRefutationsRateLimited(t *testing.T) {
	t.Parallel()
	table := pacingTable(60)
	all := view("h1", "h1", "h2", "h3")
	var now time.Time
	var at []time.Time
	r := New(Config{
		Table: table, VIPs: served(policy.Hash), Logger: quietLog(),
		Send: fakeSender{repoint: func(_ netip.Addr, c arp.Client) error { at = append(at, now); return nil }},
	})
	r.last = all
	owned := 0
	for _, c := range table.Clients() {
		if policy.Of(policy.Hash).Answers(all, testVIP, c.IP) {
			owned++
		}
	}
	start := time.Unix(1000, 0)
	now = start
	for end := start.Add(30 * time.Second); now.Before(end); {
		if now.Sub(start)%(300*time.Millisecond) == 0 {
			r.refute(now)
		}
		now = now.Add(repointTick)
		r.round(all, now)
	}
	if len(at) == 0 {
		t.Fatal("no re-assertion in 30 s of refutations: postponed for ever")
	}
	if first := at[0].Sub(start); first < settleDelay || first > settleDelay+100*time.Millisecond {
		t.Errorf("first re-assertion %s after the first refutation, want %s", first, settleDelay)
	}
	// Rounds at 2 s, 12 s and 22 s: three rounds of reassertRounds packets.
	if want := 3 * owned * reassertRounds; len(at) != want {
		t.Errorf("%d packets in 30 s of refutations, want %d (3 rounds of %d clients, %d each)", len(at), want, owned, reassertRounds)
	}
}

// TestReassertSleeps: a periodic round spread over the interval wakes the
// loop for its packets (and the wait for their answers), not every tick:
// driven by nextWake, as Run is, it keeps the pace of TestReassertPaced in
// a few turns per packet, where ticking through the minute takes 3,000.
func TestReassertSleeps(t *testing.T) {
	t.Parallel()
	const clients = 30
	table := pacingTable(clients)
	alone := view("h1", "h1")
	var at []time.Time
	var now time.Time
	r := New(Config{
		Table: table, VIPs: served(policy.Hash), Logger: quietLog(), Rate: 5000,
		Reassert: time.Minute, ReassertRate: 5,
		Send: fakeSender{repoint: func(netip.Addr, arp.Client) error { at = append(at, now); return nil }},
	})
	r.last = alone
	now = time.Unix(1000, 0)
	r.reassert(alone, now)
	turns := 0
	for end := now.Add(2 * time.Minute); now.Before(end); turns++ {
		next, ok := r.nextWake(now)
		if !ok {
			break
		}
		if next.Before(now.Add(time.Millisecond)) && turns > 0 {
			t.Fatalf("turn %d at %s: next wake-up %s, not later than now", turns, now, next)
		}
		now = next
		r.round(alone, now)
	}
	if len(at) != clients {
		t.Fatalf("%d packets, want one for each of %d clients", len(at), clients)
	}
	if got := maxPerSecond(at); got > 1 {
		t.Errorf("%d packets in one second, want at most 1 (30 spread over a minute)", got)
	}
	if took, want := at[len(at)-1].Sub(at[0]), 29*2*time.Second; took < want || took > want+clients*repointTick {
		t.Errorf("the round took %s, want %s", took, want)
	}
	if turns > 3*clients {
		t.Errorf("the loop turned %d times for %d packets, want at most %d", turns, clients, 3*clients)
	}
	if _, ok := r.nextWake(now); ok {
		t.Errorf("work still due after the round: %+v", r.Status())
	}
}
