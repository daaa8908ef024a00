package arp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"maps"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Client is one client of one VIP: it asked for the VIP from IP with MAC.
type Client struct {
	VIP      netip.Addr       `json:"vip"`
	IP       netip.Addr       `json:"ip"`
	MAC      net.HardwareAddr `json:"mac"`
	LastSeen time.Time        `json:"last_seen"`
	// FirstSeen is when this host first learned the client.
	FirstSeen time.Time `json:"first_seen"`
	// Protected: there is evidence that a real machine is behind the
	// entry (see ClientTable); a client without is probationary, the
	// first to go when the table is full (a spoofing flood is made of
	// those).
	Protected bool `json:"protected,omitempty"`
}

// tableKey is a client of a VIP in fixed-size form: the VIP as an index into
// the table's VIPs (a host serves a handful), the client as 16 bytes.
type tableKey struct {
	ip  [16]byte
	vip uint16
}

// nilSlot ends a list.
const nilSlot = ^uint32(0)

// never is a time in seconds (first, asked, shared) that has not happened.
const never = math.MinInt32

// slot is one client, kept in one of the table's two lists by index: no
// pointer for the garbage collector to chase, no allocation per client.
// Times are monotonic, counted from the table's start: seen in
// nanoseconds, the others in seconds (they only need to order events
// seconds or minutes apart), which keeps a slot at 56 bytes.
type slot struct {
	key        tableKey
	mac        [6]byte
	list       uint8 // probation, protected, or free
	flags      uint8 // slotRepeat
	first      int32 // first seen
	asked      int32 // this host last sent it a re-pointing request
	shared     int32 // when a change worth gossiping last happened
	seen       int64 // last seen
	prev, next uint32
}

const (
	listProbation = iota
	listProtected
	listFree
)

// slotRepeat marks a client that asked again: the kernel fast path may
// decide on it (see AppendSettled). It is no evidence of a real machine.
const slotRepeat = 1

// refreshShare is how far a client's last-seen time must advance before the
// change is worth telling other hosts: they only need it to not expire the
// client (hours), and clients re-ask their owner every minute or so.
const refreshShare = 10 * time.Minute

// Protection must be earned by what a spoofer cannot cheaply fake.
const (
	// protectSpan: a client seen again this long after it was first seen
	// is protected. A flood's made-up senders do not last that long in a
	// full table, and keeping each alive costs the spoofer a request per
	// sender every few minutes; a real client that keeps using the VIP
	// re-asks its owner every minute or so.
	protectSpan = 5 * time.Minute
	// confirmWindow: an answer to this host's re-pointing request (an ARP
	// reply or solicited advertisement to the VIP, from the MAC asked)
	// protects the client if it comes this soon after the request; the
	// re-pointer sends a client its packets within a second.
	confirmWindow = 10 * time.Second
	// burstWindow: more new clients than an eighth of the table in this
	// long is a flood, not a network's churn (262,144 clients by default:
	// 32,768 new ones a minute).
	burstWindow = time.Minute
)

// ClientTable remembers the clients of every VIP. Entries live long (clients
// refresh only by unicast to their owner, so other hosts rarely hear them
// again); the table is capped.
//
// Eviction is a segmented list that a flood of spoofed senders cannot use to
// push out real clients: a client is on probation, evicted first, until
// there is evidence that a real machine stands behind it; then it is
// protected. Probation is kept in order of arrival; in a flood its newest
// go first (see victim), so made-up senders displace each other and not
// the clients known before, vouched for or not yet. Evidence is what a spoofer cannot cheaply fake: the client
// answered a re-pointing request this host sent it (see Asked and
// Confirm), or asked again at least protectSpan after it was first seen,
// or a peer vouches for it. Asking twice is not evidence (a flood does that
// as cheaply as asking once), nor is being answered: each host answers its
// share of a flood. The protected list holds at most 7/8 of the table (its
// least recent fall back to probation), so new clients always find room.
//
// Time in the table is monotonic: it keeps offsets from its start, taken
// with the monotonic clock readings time.Now() carries, so a step of the
// wall clock neither expires every client nor freezes its updates.
type ClientTable struct {
	max   int
	ttl   time.Duration
	start time.Time

	mu       sync.Mutex
	vips     []netip.Addr
	vipIdx   map[netip.Addr]uint16
	served   map[netip.Addr]bool // the VIPs peers' tables may bring; nil: any
	byKey    keyIndex
	slots    slotPages
	free     uint32
	heads    [2]uint32 // most recently seen of each list
	tails    [2]uint32
	lens     [2]int
	evicts   uint64
	rejected map[MergeReject]uint64
	// New clients since arrivalsFrom (table seconds): more than an eighth
	// of the table in burstWindow is a flood (see victim).
	arrivals     int
	arrivalsFrom int32
	cursor       int // where the next EncodeAtMost starts
}

// NewClientTable returns a table of at most max entries that forgets a client
// not seen for ttl.
func NewClientTable(max int, ttl time.Duration) *ClientTable {
	return &ClientTable{
		max: max, ttl: ttl, start: time.Now(), vipIdx: map[netip.Addr]uint16{}, byKey: newKeyIndex(),
		free: nilSlot, heads: [2]uint32{nilSlot, nilSlot}, tails: [2]uint32{nilSlot, nilSlot},
		rejected: map[MergeReject]uint64{},
	}
}

// Max returns the table's capacity.
func (t *ClientTable) Max() int { return t.max }

// Serve sets the VIPs whose clients peers' tables may bring (Merge): those
// this host is configured with. Until it is called, any VIP is taken, up to
// maxMergeVIPs.
func (t *ClientTable) Serve(vips []netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.served = make(map[netip.Addr]bool, len(vips))
	for _, v := range vips {
		t.served[v] = true
	}
}

// nanos is at as the table's time: nanoseconds since its start, by the
// monotonic clock when at carries a reading of it (time.Now() and what is
// computed from it do).
func (t *ClientTable) nanos(at time.Time) int64 { return int64(at.Sub(t.start)) }

// secs is at in seconds since the table's start.
func (t *ClientTable) secs(at time.Time) int32 { return toSecs(t.nanos(at)) }

func toSecs(ns int64) int32 {
	return int32(min(max(ns/int64(time.Second), math.MinInt32+1), math.MaxInt32))
}

// tableClock turns table times back into time.Time. They carry the
// monotonic reading, comparable with time.Now()'s; but if the wall clock
// was stepped since the table started (by a second or more), they carry
// the wall time as the wall clock reads now instead, which is what is
// shown to people.
type tableClock struct {
	start time.Time
	step  time.Duration
}

func (t *ClientTable) clock() tableClock {
	now := time.Now()
	step := now.Round(0).Sub(t.start.Round(0)) - now.Sub(t.start)
	if step > -time.Second && step < time.Second {
		step = 0
	}
	return tableClock{start: t.start, step: step}
}

func (c tableClock) at(ns int64) time.Time {
	at := c.start.Add(time.Duration(ns))
	if c.step != 0 {
		return at.Round(0).Add(c.step)
	}
	return at
}

// key returns the fixed-size key of client ip of vip, adding the VIP to the
// table's VIPs if add is set. Call with t.mu held.
func (t *ClientTable) key(vip, ip netip.Addr, add bool) (tableKey, bool) {
	i, ok := t.vipIdx[vip]
	if !ok {
		if !add || len(t.vips) > 0xffff {
			return tableKey{}, false
		}
		i = uint16(len(t.vips))
		t.vips = append(t.vips, vip)
		t.vipIdx[vip] = i
	}
	return tableKey{ip: ip.As16(), vip: i}, true
}

func (t *ClientTable) unlink(i uint32) {
	s := t.slots.at(i)
	l := s.list
	if s.prev != nilSlot {
		t.slots.at(s.prev).next = s.next
	} else {
		t.heads[l] = s.next
	}
	if s.next != nilSlot {
		t.slots.at(s.next).prev = s.prev
	} else {
		t.tails[l] = s.prev
	}
	t.lens[l]--
}

func (t *ClientTable) pushFront(i uint32, l uint8) {
	s := t.slots.at(i)
	s.list, s.prev, s.next = l, nilSlot, t.heads[l]
	if t.heads[l] != nilSlot {
		t.slots.at(t.heads[l]).prev = i
	} else {
		t.tails[l] = i
	}
	t.heads[l] = i
	t.lens[l]++
}

func (t *ClientTable) pushBack(i uint32, l uint8) {
	s := t.slots.at(i)
	s.list, s.prev, s.next = l, t.tails[l], nilSlot
	if t.tails[l] != nilSlot {
		t.slots.at(t.tails[l]).next = i
	} else {
		t.heads[l] = i
	}
	t.tails[l] = i
	t.lens[l]++
}

// remove frees slot i. Call with t.mu held.
func (t *ClientTable) remove(i uint32) {
	t.unlink(i)
	s := t.slots.at(i)
	t.byKey.del(&s.key, i, &t.slots)
	*s = slot{list: listFree, next: t.free}
	t.free = i
}

// maxProtected is how many clients the protected list holds at most.
func (t *ClientTable) maxProtected() int { return max(1, t.max-t.max/8) }

// sighting is what one learning of a client says: when it was seen (table
// nanoseconds), whether that protects it, and whether, and when (table
// seconds), the change is to be gossiped.
type sighting struct {
	seen    int64
	protect bool
	mark    bool  // gossip what peers cannot have seen themselves
	markNew bool  // gossip a new client too (one heard only here)
	now     int32 // when it happened
}

// learn records a client, new or known, as w says. A change that peers
// cannot have seen themselves is marked to be gossiped if w.mark is set: a
// new MAC, a newly protected client, a last-seen time that moved a lot,
// and a new client if w.markNew is set. It reports whether the client is
// new or changed its MAC.
func (t *ClientTable) learn(k tableKey, mac [6]byte, w sighting) bool {
	if i, ok := t.byKey.get(&k, &t.slots); ok {
		s := t.slots.at(i)
		if w.seen < s.seen {
			if w.protect && s.list != listProtected {
				t.unlink(i)
				t.protect(i, w)
			}
			return false
		}
		changed := s.mac != mac
		if w.mark && (changed || w.seen-s.seen >= int64(refreshShare)) {
			s.shared = w.now
		}
		s.mac, s.seen = mac, w.seen
		// Probation stays in order of arrival: asking again, however
		// often, earns a made-up sender nothing.
		if w.protect || s.list == listProtected {
			t.unlink(i)
			t.protect(i, w)
		}
		return changed
	}
	if t.max <= 0 {
		return false
	}
	if w.now-t.arrivalsFrom >= int32(burstWindow/time.Second) || w.now < t.arrivalsFrom {
		t.arrivals, t.arrivalsFrom = 0, w.now
	}
	t.arrivals++
	for t.byKey.n >= t.max {
		t.remove(t.victim())
		t.evicts++
	}
	i := t.free
	if i != nilSlot {
		t.free = t.slots.at(i).next
	} else {
		i = t.slots.add()
	}
	s := t.slots.at(i)
	*s = slot{key: k, mac: mac, seen: w.seen, first: toSecs(w.seen), asked: never, shared: never}
	if w.mark && w.markNew {
		s.shared = w.now
	}
	t.byKey.put(i, &t.slots)
	if w.protect {
		t.protect(i, w)
	} else {
		t.pushFront(i, listProbation)
	}
	return true
}

// victim returns the client to evict from a full table: one on probation
// if there is any. While new clients arrive faster than a real network
// brings them (a flood), the newest, so that made-up senders displace each
// other and not the clients known before; otherwise the one known longest
// without evidence (it had minutes to earn some). Call with t.mu held.
func (t *ClientTable) victim() uint32 {
	switch {
	case t.lens[listProbation] == 0:
		return t.tails[listProtected]
	case t.arrivals > max(1, t.max/8):
		return t.heads[listProbation]
	}
	return t.tails[listProbation]
}

// protect puts unlinked slot i at the front of the protected list, making
// room there by moving its least recent client back to probation, with the
// clients known longest. A newly protected client is marked to be gossiped
// if w.mark is set.
func (t *ClientTable) protect(i uint32, w sighting) {
	if s := t.slots.at(i); s.list != listProtected && w.mark {
		s.shared = w.now
	}
	t.pushFront(i, listProtected)
	for t.lens[listProtected] > t.maxProtected() {
		last := t.tails[listProtected]
		t.unlink(last)
		t.pushBack(last, listProbation)
	}
}

// Learn records that client ip with mac asked for vip at now, in a way that
// only this host heard (a unicast request, or one whose audience is not
// known): what it changes is gossiped. A new client is on probation; one
// that asks again at least protectSpan after it was first seen is
// protected. A MAC that is not unicast, or an address no machine can
// have, teaches nothing.
func (t *ClientTable) Learn(vip, ip netip.Addr, mac net.HardwareAddr, now time.Time) {
	t.learnWire(vip, ip, mac, now, true, false)
}

// LearnBroadcast is Learn for a request every host heard (a broadcast):
// they learn the same from it, so nothing is gossiped.
func (t *ClientTable) LearnBroadcast(vip, ip netip.Addr, mac net.HardwareAddr, now time.Time) {
	t.learnWire(vip, ip, mac, now, false, false)
}

// Confirm is Learn for a client's answer to a request: an ARP reply, or a
// solicited advertisement, to a VIP. If this host asked the client (Asked)
// within confirmWindow, at the MAC that answers, a real machine answered
// and the client is protected.
func (t *ClientTable) Confirm(vip, ip netip.Addr, mac net.HardwareAddr, now time.Time) {
	t.learnWire(vip, ip, mac, now, true, true)
}

func (t *ClientTable) learnWire(vip, ip netip.Addr, mac net.HardwareAddr, now time.Time, direct, answer bool) {
	if !UnicastMAC(mac) || !unicastIP(ip) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	k, _ := t.key(vip, ip, true)
	w := sighting{seen: t.nanos(now), mark: direct, now: t.secs(now)}
	if i, known := t.byKey.get(&k, &t.slots); known {
		s := t.slots.at(i)
		s.flags |= slotRepeat
		span := w.now - s.first
		asked := s.asked != never && w.now-s.asked >= 0 && w.now-s.asked <= int32(confirmWindow/time.Second)
		w.protect = span >= int32(protectSpan/time.Second) || (answer && asked && s.mac == [6]byte(mac))
	}
	t.learn(k, [6]byte(mac), w)
}

// Asked notes that this host sent client ip of vip a re-pointing request
// at now: an answer soon after (Confirm) protects it.
func (t *ClientTable) Asked(vip, ip netip.Addr, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k, ok := t.key(vip, ip, false)
	if !ok {
		return
	}
	if i, ok := t.byKey.get(&k, &t.slots); ok {
		t.slots.at(i).asked = t.secs(now)
	}
}

// Protect protects client ip of vip on evidence its caller has that a real
// machine stands behind it.
func (t *ClientTable) Protect(vip, ip netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k, ok := t.key(vip, ip, false)
	if !ok {
		return
	}
	if i, ok := t.byKey.get(&k, &t.slots); ok && t.slots.at(i).list != listProtected {
		t.unlink(i)
		t.protect(i, sighting{mark: true, now: t.secs(time.Now())})
	}
}

func (t *ClientTable) client(s *slot, c tableClock, mac net.HardwareAddr) Client {
	copy(mac, s.mac[:])
	return Client{
		VIP: t.vips[s.key.vip], IP: netip.AddrFrom16(s.key.ip).Unmap(), MAC: mac,
		LastSeen: c.at(s.seen), FirstSeen: c.at(int64(s.first) * int64(time.Second)),
		Protected: s.list == listProtected,
	}
}

// lookup returns the slot of client ip of vip. Call with t.mu held.
func (t *ClientTable) lookup(vip, ip netip.Addr) (*slot, bool) {
	k, ok := t.key(vip, ip, false)
	if !ok {
		return nil, false
	}
	i, ok := t.byKey.get(&k, &t.slots)
	if !ok {
		return nil, false
	}
	return t.slots.at(i), true
}

// Get returns the client ip of vip.
func (t *ClientTable) Get(vip, ip netip.Addr) (Client, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.lookup(vip, ip)
	if !ok {
		return Client{}, false
	}
	return t.client(s, t.clock(), make(net.HardwareAddr, 6)), true
}

// MAC returns the MAC of client ip of vip, allocating nothing.
func (t *ClientTable) MAC(vip, ip netip.Addr) ([6]byte, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.lookup(vip, ip)
	if !ok {
		return [6]byte{}, false
	}
	return s.mac, true
}

// Protected reports whether client ip of vip is known and protected.
func (t *ClientTable) Protected(vip, ip netip.Addr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.lookup(vip, ip)
	return ok && s.list == listProtected
}

// Settled reports whether client ip of vip is known and asked again, or is
// protected: the kernel fast path decides on those (see Responder.decided).
func (t *ClientTable) Settled(vip, ip netip.Addr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.lookup(vip, ip)
	return ok && (s.list == listProtected || s.flags&slotRepeat != 0)
}

// Expire forgets clients not seen since now minus the table's ttl.
func (t *ClientTable) Expire(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	limit := t.nanos(now) - int64(t.ttl)
	n := 0
	// Merged entries keep their own age, so the lists are only roughly in
	// last-seen order: look at every entry.
	for i := range uint32(t.slots.n) {
		if s := t.slots.at(i); s.list != listFree && s.seen <= limit {
			t.remove(i)
			n++
		}
	}
	return n
}

// Forget drops every client of vip (a VIP no longer served).
func (t *ClientTable) Forget(vip netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	vi, ok := t.vipIdx[vip]
	if !ok {
		return
	}
	for i := range uint32(t.slots.n) {
		if s := t.slots.at(i); s.list != listFree && s.key.vip == vi {
			t.remove(i)
		}
	}
}

// Len returns the number of clients known.
func (t *ClientTable) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byKey.n
}

// TableStats counts a table's clients by list, its evictions, and the
// entries of peers' tables it refused.
type TableStats struct {
	Probation, Protected int
	Evicted              uint64 // clients dropped to make room
	// Rejected counts entries of peers' tables not taken (or, for
	// RejectProtected, not taken as protected), by reason.
	Rejected map[MergeReject]uint64
}

// Stats returns the table's counts.
func (t *ClientTable) Stats() TableStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return TableStats{Probation: t.lens[listProbation], Protected: t.lens[listProtected], Evicted: t.evicts,
		Rejected: maps.Clone(t.rejected)}
}

// Clients returns a copy of every entry: protected ones first, most
// recently seen first; then those on probation, newest first.
func (t *ClientTable) Clients() []Client {
	t.mu.Lock()
	defer t.mu.Unlock()
	cs := make([]Client, 0, t.byKey.n)
	// One block for every MAC: a client each would be an allocation each.
	macs := make([]byte, 6*t.byKey.n)
	c := t.clock()
	for _, l := range []uint8{listProtected, listProbation} {
		for i := t.heads[l]; i != nilSlot; i = t.slots.at(i).next {
			cs = append(cs, t.client(t.slots.at(i), c, macs[:6:6]))
			macs = macs[6:]
		}
	}
	return cs
}

// Entry is one client as a walk of the table (All) gives it: the same as
// Client, without an allocation.
type Entry struct {
	VIP, IP   netip.Addr
	MAC       [6]byte
	Protected bool
	LastSeen  time.Time
	FirstSeen time.Time
}

// walkChunk is how many clients a walk copies at a time, under the table's
// lock: a walk of a large table neither holds the lock long (learning
// waits for it) nor copies the whole table at once.
const walkChunk = 1024

// All returns every client, in the table's own order. It copies walkChunk
// clients at a time under the table's lock and yields them with the lock
// released, so the caller may take its time and call the table. A walk is
// not a snapshot: a client known throughout is yielded once; one learned,
// forgotten or evicted meanwhile may or may not be (and one evicted and
// learned again may be yielded twice).
func (t *ClientTable) All() iter.Seq[Entry] {
	return func(yield func(Entry) bool) {
		buf := make([]slot, 0, walkChunk)
		for from := 0; ; {
			var vips []netip.Addr
			var c tableClock
			buf, from, vips, c = t.chunk(buf[:0], from)
			if len(buf) == 0 {
				return
			}
			for i := range buf {
				s := &buf[i]
				e := Entry{VIP: vips[s.key.vip], IP: netip.AddrFrom16(s.key.ip).Unmap(), MAC: s.mac,
					Protected: s.list == listProtected, LastSeen: c.at(s.seen), FirstSeen: c.at(int64(s.first) * int64(time.Second))}
				if !yield(e) {
					return
				}
			}
		}
	}
}

// chunk appends to buf up to its capacity of the clients in slots from on,
// and returns it, where the next chunk starts, the VIPs its keys index and
// the clock of its times.
func (t *ClientTable) chunk(buf []slot, from int) ([]slot, int, []netip.Addr, tableClock) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for ; from < t.slots.n && len(buf) < cap(buf); from++ {
		if s := t.slots.at(uint32(from)); s.list != listFree {
			buf = append(buf, *s)
		}
	}
	// The VIPs only grow, and only past their length: this prefix stays.
	return buf, from, t.vips[:len(t.vips):len(t.vips)], t.clock()
}

// The wire form of the table, exchanged between hosts: version 2 is
//
//	version (1 byte), VIP count (2 bytes), each VIP (16 bytes), then per client:
//	flags (1 byte: 1 = IPv4, 2 = protected), VIP index (2 bytes),
//	IP (4 or 16 bytes), MAC (6 bytes), age in seconds at encoding (4 bytes)
//
// 17 bytes for an IPv4 client. Ages rather than times keep the hosts'
// clocks out of it. A host reads the versions from tableWireMin on: the
// previous release's too, so that a cluster upgrading host by host keeps
// sharing its clients (docs/operations.md, Upgrading). Version 1, of the
// first builds, is
//
//	version (1 byte), then per client: VIP (16 bytes), IP (16 bytes),
//	MAC (6 bytes), last seen (8 bytes, Unix milliseconds)
//
// and is read as version 2 with ages taken from this host's clock.
const (
	tableWireVersion = 2
	tableWireMin     = 1
	entrySizeV1      = 16 + 16 + 6 + 8
	flagIPv4         = 1
	flagProtected    = 2
	entrySize4       = 1 + 2 + 4 + 6 + 4
	entrySize6       = 1 + 2 + 16 + 6 + 4
)

// Encode encodes, with their ages at now, the clients that changed in a way
// worth gossiping (new, new MAC, newly protected, or seen again long after)
// since since; the zero since encodes every client.
func (t *ClientTable) Encode(now, since time.Time) []byte {
	return t.EncodeAtMost(now, since, 0)
}

// EncodeAtMost is Encode of at most limit bytes (0: no limit). When the
// changes do not fit, each call starts where the last one stopped, so that
// every change goes out in turn; one that never does is sent again when its
// client's last-seen time next moves far enough.
func (t *ClientTable) EncodeAtMost(now, since time.Time, limit int) []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	nowNS, sinceS := t.nanos(now), int32(never)
	if !since.IsZero() {
		sinceS = t.secs(since)
	}
	n := 0
	for i := range uint32(t.slots.n) {
		if s := t.slots.at(i); s.list != listFree && s.shared >= sinceS {
			n++
		}
	}
	size := 3 + 16*len(t.vips) + n*entrySize4
	if limit > 0 {
		size = min(size, limit)
	}
	b := make([]byte, 0, size)
	b = append(b, tableWireVersion)
	b = binary.BigEndian.AppendUint16(b, uint16(len(t.vips)))
	for _, v := range t.vips {
		a := v.As16()
		b = append(b, a[:]...)
	}
	start := 0
	if limit > 0 && t.slots.n > 0 {
		start = t.cursor % t.slots.n
	}
	for j := range t.slots.n {
		i := (start + j) % t.slots.n
		s := t.slots.at(uint32(i))
		if s.list == listFree || s.shared < sinceS {
			continue
		}
		if limit > 0 && len(b)+entrySize6 > limit {
			t.cursor = i
			break
		}
		b = appendEntry(b, s, nowNS)
	}
	return b
}

// appendEntry appends client s in wire form, with its age at now (table
// nanoseconds).
func appendEntry(b []byte, s *slot, now int64) []byte {
	var flags byte
	if s.list == listProtected {
		flags |= flagProtected
	}
	ip := netip.AddrFrom16(s.key.ip)
	if ip.Is4In6() {
		flags |= flagIPv4
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint16(b, s.key.vip)
	if flags&flagIPv4 != 0 {
		b = append(b, s.key.ip[12:]...)
	} else {
		b = append(b, s.key.ip[:]...)
	}
	b = append(b, s.mac[:]...)
	age := max(0, (now-s.seen)/int64(time.Second))
	return binary.BigEndian.AppendUint32(b, uint32(min(age, 1<<32-1)))
}

var (
	errWireVersion = errors.New("client table: unknown wire version")
	// errWireRange names what this build reads.
	errWireRange   = fmt.Sprintf("this build reads versions %d to %d", tableWireMin, tableWireVersion)
	errTruncated   = errors.New("client table: truncated")
	errTooManyVIPs = errors.New("client table: more VIPs than a host serves")
)

// fromV1 rewrites a table of wire version 1 as version 2, its clients' last
// seen times as ages at now. None is protected: version 1 did not say.
func fromV1(b []byte, now time.Time) ([]byte, error) {
	b = b[1:]
	if len(b)%entrySizeV1 != 0 {
		return nil, errTruncated
	}
	index := map[netip.Addr]uint16{}
	var vips []netip.Addr
	entries := make([]byte, 0, len(b)/entrySizeV1*entrySize6)
	for ; len(b) > 0; b = b[entrySizeV1:] {
		vip := netip.AddrFrom16([16]byte(b[:16])).Unmap()
		i, ok := index[vip]
		if !ok {
			if len(vips) == maxMergeVIPs {
				return nil, errTooManyVIPs
			}
			i = uint16(len(vips))
			index[vip] = i
			vips = append(vips, vip)
		}
		ip := netip.AddrFrom16([16]byte(b[16:32]))
		var flags byte
		if ip.Is4In6() {
			flags = flagIPv4
		}
		entries = append(entries, flags)
		entries = binary.BigEndian.AppendUint16(entries, i)
		if ip.Is4In6() {
			a := ip.Unmap().As4()
			entries = append(entries, a[:]...)
		} else {
			entries = append(entries, b[16:32]...)
		}
		entries = append(entries, b[32:38]...)
		seen := int64(binary.BigEndian.Uint64(b[38:46]))
		age := max(0, (now.UnixMilli()-seen)/1000)
		entries = binary.BigEndian.AppendUint32(entries, uint32(min(age, 1<<32-1)))
	}
	out := make([]byte, 0, 3+16*len(vips)+len(entries))
	out = append(out, tableWireVersion)
	out = binary.BigEndian.AppendUint16(out, uint16(len(vips)))
	for _, v := range vips {
		a := v.As16()
		out = append(out, a[:]...)
	}
	return append(out, entries...), nil
}

// MergeReject is why an entry of a peer's table was not taken; it becomes
// a metric label.
type MergeReject string

// Reasons to refuse what a peer's table brings.
const (
	RejectVIP       MergeReject = "vip_not_served"  // a client of a VIP this host is not configured with
	RejectMAC       MergeReject = "mac_not_unicast" // a broadcast, multicast or zero MAC
	RejectAddress   MergeReject = "bad_address"     // a client address no machine can have
	RejectTooMany   MergeReject = "too_many"        // beyond the table's capacity in one merge
	RejectProtected MergeReject = "too_many_protected"
	RejectVIPCount  MergeReject = "too_many_vips" // the whole message: more VIPs than maxMergeVIPs
)

// maxMergeVIPs bounds the VIPs one peer's table may name: a host serves a
// handful, and the configured set bounds it further once Serve is called.
const maxMergeVIPs = 1024

// Merge learns the clients in another host's encoded table and returns those
// that were new here. Entries older than the ttl are skipped; those the
// other host protects are protected here too. What it learns is not
// gossiped again: Merge is for a whole table, sent to a host that joins.
//
// A merge is bounded: clients of VIPs this host serves only (Serve), at most
// the table's capacity of entries and its protected list's capacity of
// protected ones, unicast MACs and client addresses only; the rest is
// dropped and counted by reason (Stats).
func (t *ClientTable) Merge(b []byte, now time.Time) ([]Client, error) {
	return t.merge(b, now, false, true)
}

// MergeChanges is Merge for the changes a peer sends in a periodic
// exchange: what is news here is passed on in this host's own exchanges, so
// that it reaches every host of a big cluster.
func (t *ClientTable) MergeChanges(b []byte, now time.Time) ([]Client, error) {
	return t.merge(b, now, true, true)
}

// mergeVIPs reads the VIPs at the start of a peer's table, and returns
// them with the rest. Call with t.mu held.
func (t *ClientTable) mergeVIPs(b []byte) ([]netip.Addr, []byte, error) {
	if b[0] != tableWireVersion {
		return nil, nil, fmt.Errorf("%w %d, %s", errWireVersion, b[0], errWireRange)
	}
	if len(b) < 3 {
		return nil, nil, errTruncated
	}
	nv := int(binary.BigEndian.Uint16(b[1:3]))
	b = b[3:]
	if nv > maxMergeVIPs {
		t.rejected[RejectVIPCount]++
		return nil, nil, errTooManyVIPs
	}
	if len(b) < 16*nv {
		return nil, nil, errTruncated
	}
	vips := make([]netip.Addr, nv)
	for i := range vips {
		vips[i] = netip.AddrFrom16([16]byte(b[16*i:])).Unmap()
	}
	return vips, b[16*nv:], nil
}

// mergeBudget is what is left of one merge's bounds.
type mergeBudget struct{ entries, protected int }

// check vets one entry of a peer's table for client ip of vip at mac, and
// charges it to the budget; a protected entry past the budget is taken
// unprotected. Call with t.mu held.
func (t *ClientTable) check(vip, ip netip.Addr, mac []byte, protected *bool, b *mergeBudget) bool {
	reason := MergeReject("")
	switch {
	case t.served != nil && !t.served[vip]:
		reason = RejectVIP
	case !UnicastMAC(mac):
		reason = RejectMAC
	case !unicastIP(ip):
		reason = RejectAddress
	case b.entries <= 0:
		reason = RejectTooMany
	}
	if reason != "" {
		t.rejected[reason]++
		return false
	}
	b.entries--
	if *protected {
		if b.protected <= 0 {
			t.rejected[RejectProtected]++
			*protected = false
		}
		b.protected--
	}
	return true
}

// merge is Merge, or MergeChanges if relay is set; it lists the clients
// that were new only if collect is set (a whole table merged at a join
// would list them all: 1,000,000 clients, 130 MB).
func (t *ClientTable) merge(b []byte, now time.Time, relay, collect bool) ([]Client, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if b[0] == 1 {
		var err error
		if b, err = fromV1(b, now); err != nil {
			if errors.Is(err, errTooManyVIPs) {
				t.mu.Lock()
				t.rejected[RejectVIPCount]++
				t.mu.Unlock()
			}
			return nil, err
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	vips, b, err := t.mergeVIPs(b)
	if err != nil {
		return nil, err
	}
	nowNS, nowS := t.nanos(now), t.secs(now)
	budget := mergeBudget{entries: t.max, protected: t.maxProtected()}
	c := t.clock()
	var added []Client
	for len(b) > 0 {
		size := entrySize6
		if b[0]&flagIPv4 != 0 {
			size = entrySize4
		}
		if len(b) < size {
			return added, errTruncated
		}
		e := b[:size]
		b = b[size:]
		vi := int(binary.BigEndian.Uint16(e[1:3]))
		if vi >= len(vips) {
			return added, errors.New("client table: VIP index out of range")
		}
		var ip netip.Addr
		if e[0]&flagIPv4 != 0 {
			ip = netip.AddrFrom4([4]byte(e[3:7]))
		} else {
			ip = netip.AddrFrom16([16]byte(e[3:19])).Unmap()
		}
		rest := e[size-10:]
		age := time.Duration(binary.BigEndian.Uint32(rest[6:])) * time.Second
		if age >= t.ttl {
			continue
		}
		protected := e[0]&flagProtected != 0
		if !t.check(vips[vi], ip, rest[:6], &protected, &budget) {
			continue
		}
		k, _ := t.key(vips[vi], ip, true)
		_, known := t.byKey.get(&k, &t.slots)
		w := sighting{seen: nowNS - int64(age), protect: protected, mark: relay, markNew: relay, now: nowS}
		if t.learn(k, [6]byte(rest[:6]), w) && !known && collect {
			i, _ := t.byKey.get(&k, &t.slots)
			added = append(added, t.client(t.slots.at(i), c, make(net.HardwareAddr, 6)))
		}
	}
	return added, nil
}

// Known is a client of some VIP, as the kernel fast path needs it.
type Known struct {
	IP  netip.Addr
	MAC [6]byte
}

// AppendSettled appends the settled clients of vip (see Settled) to dst
// and returns it.
func (t *ClientTable) AppendSettled(dst []Known, vip netip.Addr) []Known {
	t.mu.Lock()
	defer t.mu.Unlock()
	vi, ok := t.vipIdx[vip]
	if !ok {
		return dst
	}
	for i := range uint32(t.slots.n) {
		s := t.slots.at(i)
		if s.list != listFree && s.key.vip == vi && (s.list == listProtected || s.flags&slotRepeat != 0) {
			dst = append(dst, Known{IP: netip.AddrFrom16(s.key.ip).Unmap(), MAC: s.mac})
		}
	}
	return dst
}
