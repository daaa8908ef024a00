package repoint

import (
	"cmp"
	"iter"
	"net/netip"
	"slices"
	"time"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
)

// slowItem is a client of the periodic round. At node.reassert_rate a
// round of a large table lasts hours (a third of 1,000,000 clients at 5 a
// second: 18 hours), all that time in memory: so the round keeps of each
// client only its address, its VIP's index and what orders it
// (sortByEvidence), 32 bytes, and makes the failover queue's entry for it
// only when its packet is due.
type slowItem struct {
	key       clientKey
	protected bool
	first     int32 // first seen: seconds from the round's start, rounded down
	seen      int64 // last seen: nanoseconds from the round's start
}

// slowRound is the periodic round in progress: its clients in the order
// they get their packet, the next one's place, and those whose packet
// could not be sent and is owed still (in pending, as failover's are).
type slowRound struct {
	start time.Time
	items []slowItem
	next  int
	retry []*queued
	// moved are the clients a failover or settle queued at the full rate
	// while the round runs: the round skips them.
	moved map[clientKey]bool
}

// left is how many clients the round has still to send a packet, or to
// skip.
func (s *slowRound) left() int { return len(s.items) - s.next + len(s.retry) }

// newSlowRound makes the round of the clients of clients this host holds
// in v, sorted by evidence.
func (r *Repointer) newSlowRound(v *gossip.View, pols map[netip.Addr]policy.Policy, clients iter.Seq[arp.Entry], now time.Time) *slowRound {
	s := &slowRound{start: now, moved: map[clientKey]bool{}}
	for c := range clients {
		p, ok := pols[c.VIP]
		if !ok || !p.Holds(v, c.VIP, c.IP) {
			continue
		}
		s.items = append(s.items, slowItem{key: r.keyOf(c.VIP, c.IP), protected: c.Protected,
			first: floorSeconds(c.FirstSeen.Sub(now)), seen: int64(c.LastSeen.Sub(now))})
	}
	// A walk of the table may yield a client twice (see
	// arp.ClientTable.All): one packet each, the latest sighting kept.
	slices.SortFunc(s.items, func(a, b slowItem) int {
		if c := compareKeys(a, b); c != 0 {
			return c
		}
		return cmp.Compare(b.seen, a.seen)
	})
	s.items = slices.CompactFunc(s.items, func(a, b slowItem) bool { return compareKeys(a, b) == 0 })
	s.items = slices.Clip(s.items)
	slices.SortStableFunc(s.items, slowItem.compare)
	return s
}

func compareKeys(a, b slowItem) int {
	if a.key.vip != b.key.vip {
		return int(a.key.vip) - int(b.key.vip)
	}
	return slices.Compare(a.key.ip[:], b.key.ip[:])
}

// compare is sortByEvidence's order.
func (a slowItem) compare(b slowItem) int {
	switch {
	case a.protected != b.protected:
		if a.protected {
			return -1
		}
		return 1
	case !a.protected && a.first != b.first:
		if a.first < b.first {
			return -1
		}
		return 1
	case a.seen != b.seen:
		if a.seen > b.seen {
			return -1
		}
		return 1
	}
	return 0
}

// floorSeconds is d in whole seconds, rounded down: first-seen times are
// whole seconds apart, and rounding towards zero would merge two of them
// either side of the round's start.
func floorSeconds(d time.Duration) int32 {
	s := d / time.Second
	if d%time.Second < 0 {
		s--
	}
	return int32(min(max(s, -1<<31), 1<<31-1))
}

// due returns when the round's next packet is due, or zero if none is
// left: the clients not yet sent since its start, those to try again at
// their time.
func (s *slowRound) due() time.Time {
	var first time.Time
	if s.next < len(s.items) {
		first = s.start
	}
	for _, q := range s.retry {
		if q.left > 0 && (first.IsZero() || q.next.Before(first)) {
			first = q.next
		}
	}
	return first
}

// sendSlow sends the periodic round's due packets, within both budgets,
// in the round's order: the packets to try again (of clients earlier in
// it) first.
func (r *Repointer) sendSlow(try func(*queued) bool, now time.Time) {
	s := r.slow
	if s == nil {
		return
	}
	for _, q := range s.retry {
		if r.tokens < 1 || r.slowTokens < 1 {
			return
		}
		if q.left > 0 && !now.Before(q.next) && try(q) {
			r.slowTokens--
		}
	}
	for ; s.next < len(s.items) && r.tokens >= 1 && r.slowTokens >= 1; s.next++ {
		k := s.items[s.next].key
		if s.moved[k] {
			continue
		}
		q := &queued{key: k, left: 1, next: s.start, periodic: true}
		if !try(q) {
			continue
		}
		r.slowTokens--
		if q.left > 0 { // not sent: tried again at its time
			r.pending[k] = q
			s.retry = append(s.retry, q)
		}
	}
}

// dropSlow drops the retries done, and the round once it is over.
func (r *Repointer) dropSlow() {
	if r.slow == nil {
		return
	}
	r.slow.retry = r.drop(r.slow.retry)
	if r.slow.left() == 0 {
		r.slow = nil
	}
}
