package arp

import (
	"encoding/binary"
	"errors"
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
	// Protected: the client asked again, or a host re-pointed it; a
	// client seen once is probationary, the first to go when the table is
	// full (a spoofing flood is made of those).
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

// slot is one client, kept in one of the table's two lists by index: no
// pointer for the garbage collector to chase, no allocation per client.
type slot struct {
	key        tableKey
	mac        [6]byte
	list       uint8 // probation, protected, or free
	_          uint8
	seen       int64 // last seen, Unix ms
	shared     int64 // when a change worth gossiping last happened, Unix ms
	prev, next uint32
}

const (
	listProbation = iota
	listProtected
	listFree
)

// refreshShare is how far a client's last-seen time must advance before the
// change is worth telling other hosts: they only need it to not expire the
// client (hours), and clients re-ask their owner every minute or so.
const refreshShare = 10 * time.Minute

// ClientTable remembers the clients of every VIP. Entries live long (clients
// refresh only by unicast to their owner, so other hosts rarely hear them
// again); the table is capped.
//
// Eviction is a segmented LRU that a flood of spoofed senders cannot use to
// push out real clients: a client seen once is on probation and evicted
// first; a client that asks again, that this host re-points, or that
// another host marks protected, moves to the protected list, which holds at
// most 7/8 of the table (its least recent fall back to probation). Being
// answered once protects nobody: each host answers its share of a flood.
type ClientTable struct {
	max int
	ttl time.Duration

	mu     sync.Mutex
	vips   []netip.Addr
	vipIdx map[netip.Addr]uint16
	byKey  map[tableKey]uint32
	slots  []slot
	free   uint32
	heads  [2]uint32 // most recently seen of each list
	tails  [2]uint32
	lens   [2]int
	evicts uint64
	cursor int // where the next EncodeAtMost starts
}

// NewClientTable returns a table of at most max entries that forgets a client
// not seen for ttl.
func NewClientTable(max int, ttl time.Duration) *ClientTable {
	return &ClientTable{
		max: max, ttl: ttl, vipIdx: map[netip.Addr]uint16{}, byKey: map[tableKey]uint32{},
		free: nilSlot, heads: [2]uint32{nilSlot, nilSlot}, tails: [2]uint32{nilSlot, nilSlot},
	}
}

// Max returns the table's capacity.
func (t *ClientTable) Max() int { return t.max }

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
	s := &t.slots[i]
	l := s.list
	if s.prev != nilSlot {
		t.slots[s.prev].next = s.next
	} else {
		t.heads[l] = s.next
	}
	if s.next != nilSlot {
		t.slots[s.next].prev = s.prev
	} else {
		t.tails[l] = s.prev
	}
	t.lens[l]--
}

func (t *ClientTable) pushFront(i uint32, l uint8) {
	s := &t.slots[i]
	s.list, s.prev, s.next = l, nilSlot, t.heads[l]
	if t.heads[l] != nilSlot {
		t.slots[t.heads[l]].prev = i
	} else {
		t.tails[l] = i
	}
	t.heads[l] = i
	t.lens[l]++
}

// remove frees slot i. Call with t.mu held.
func (t *ClientTable) remove(i uint32) {
	t.unlink(i)
	delete(t.byKey, t.slots[i].key)
	t.slots[i] = slot{list: listFree, next: t.free}
	t.free = i
}

// maxProtected is how many clients the protected list holds at most.
func (t *ClientTable) maxProtected() int { return max(1, t.max-t.max/8) }

// learn records a client seen at seen (Unix ms), protected or not. A change
// that peers cannot have seen themselves is marked to be gossiped at mark
// (Unix ms; 0 marks nothing): a new MAC, a newly protected client, a last
// seen time that moved a lot, and a new client if markNew is set (a client
// heard on the wire is new to every host at once). It reports whether the
// client is new or changed its MAC.
func (t *ClientTable) learn(k tableKey, mac [6]byte, seen int64, protect bool, mark int64, markNew bool) bool {
	now := mark
	if i, ok := t.byKey[k]; ok {
		s := &t.slots[i]
		if seen < s.seen {
			if protect && s.list != listProtected {
				t.unlink(i)
				t.protect(i, now)
			}
			return false
		}
		changed := s.mac != mac
		if mark != 0 && (changed || seen-s.seen >= refreshShare.Milliseconds()) {
			s.shared = mark
		}
		s.mac, s.seen = mac, seen
		t.unlink(i)
		if protect || s.list == listProtected {
			t.protect(i, now)
		} else {
			t.pushFront(i, listProbation)
		}
		return changed
	}
	if t.max <= 0 {
		return false
	}
	for len(t.byKey) >= t.max {
		l := uint8(listProbation)
		if t.lens[l] == 0 {
			l = listProtected
		}
		t.remove(t.tails[l])
		t.evicts++
	}
	i := t.free
	if i != nilSlot {
		t.free = t.slots[i].next
	} else {
		i = uint32(len(t.slots))
		t.slots = append(t.slots, slot{})
	}
	t.slots[i] = slot{key: k, mac: mac, seen: seen}
	if markNew {
		t.slots[i].shared = mark
	}
	t.byKey[k] = i
	if protect {
		t.protect(i, now)
	} else {
		t.pushFront(i, listProbation)
	}
	return true
}

// protect puts unlinked slot i at the front of the protected list, making
// room there by moving its least recent client back to probation. A newly
// protected client is marked to be gossiped at mark, unless it is 0.
func (t *ClientTable) protect(i uint32, mark int64) {
	if t.slots[i].list != listProtected && mark != 0 {
		t.slots[i].shared = mark
	}
	t.pushFront(i, listProtected)
	for t.lens[listProtected] > t.maxProtected() {
		last := t.tails[listProtected]
		t.unlink(last)
		t.pushFront(last, listProbation)
	}
}

// Learn records that client ip with mac asked for vip at now, in a way that
// only this host heard (a unicast request, or one whose audience is not
// known): what it changes is gossiped. A new client is on probation; one
// that asks again is protected.
func (t *ClientTable) Learn(vip, ip netip.Addr, mac net.HardwareAddr, now time.Time) {
	t.learnWire(vip, ip, mac, now, true)
}

// LearnBroadcast is Learn for a request every host heard (a broadcast):
// they learn the same from it, so nothing is gossiped.
func (t *ClientTable) LearnBroadcast(vip, ip netip.Addr, mac net.HardwareAddr, now time.Time) {
	t.learnWire(vip, ip, mac, now, false)
}

func (t *ClientTable) learnWire(vip, ip netip.Addr, mac net.HardwareAddr, now time.Time, direct bool) {
	if len(mac) != 6 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	k, _ := t.key(vip, ip, true)
	_, known := t.byKey[k]
	ms, mark := now.UnixMilli(), int64(0)
	if direct {
		mark = ms
	}
	t.learn(k, [6]byte(mac), ms, known, mark, false)
}

// Protect marks client ip of vip as one this host re-points, so that a
// flood of new senders does not evict it.
func (t *ClientTable) Protect(vip, ip netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k, ok := t.key(vip, ip, false)
	if !ok {
		return
	}
	if i, ok := t.byKey[k]; ok && t.slots[i].list != listProtected {
		t.unlink(i)
		t.protect(i, time.Now().UnixMilli())
	}
}

func (t *ClientTable) client(s *slot) Client {
	return Client{
		VIP: t.vips[s.key.vip], IP: netip.AddrFrom16(s.key.ip).Unmap(),
		MAC: net.HardwareAddr(append([]byte(nil), s.mac[:]...)), LastSeen: time.UnixMilli(s.seen),
		Protected: s.list == listProtected,
	}
}

// Get returns the client ip of vip.
func (t *ClientTable) Get(vip, ip netip.Addr) (Client, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k, ok := t.key(vip, ip, false)
	if !ok {
		return Client{}, false
	}
	i, ok := t.byKey[k]
	if !ok {
		return Client{}, false
	}
	return t.client(&t.slots[i]), true
}

// Protected reports whether client ip of vip is known and protected.
func (t *ClientTable) Protected(vip, ip netip.Addr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	k, ok := t.key(vip, ip, false)
	if !ok {
		return false
	}
	i, ok := t.byKey[k]
	return ok && t.slots[i].list == listProtected
}

// Expire forgets clients not seen since now minus the table's ttl.
func (t *ClientTable) Expire(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	limit := now.Add(-t.ttl).UnixMilli()
	n := 0
	// Merged entries keep their own age, so the lists are only roughly in
	// last-seen order: look at every entry.
	for i := range t.slots {
		if s := &t.slots[i]; s.list != listFree && s.seen <= limit {
			t.remove(uint32(i))
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
	for i := range t.slots {
		if s := &t.slots[i]; s.list != listFree && s.key.vip == vi {
			t.remove(uint32(i))
		}
	}
}

// Len returns the number of clients known.
func (t *ClientTable) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byKey)
}

// TableStats counts a table's clients by list, and its evictions.
type TableStats struct {
	Probation, Protected int
	Evicted              uint64 // clients dropped to make room
}

// Stats returns the table's counts.
func (t *ClientTable) Stats() TableStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return TableStats{Probation: t.lens[listProbation], Protected: t.lens[listProtected], Evicted: t.evicts}
}

// Clients returns a copy of every entry, protected ones first, each list
// most recently seen first.
func (t *ClientTable) Clients() []Client {
	t.mu.Lock()
	defer t.mu.Unlock()
	cs := make([]Client, 0, len(t.byKey))
	// One block for every MAC: a client each would be an allocation each.
	macs := make([]byte, 6*len(t.byKey))
	for _, l := range []uint8{listProtected, listProbation} {
		for i := t.heads[l]; i != nilSlot; i = t.slots[i].next {
			s := &t.slots[i]
			mac := macs[:6:6]
			macs = macs[6:]
			copy(mac, s.mac[:])
			cs = append(cs, Client{VIP: t.vips[s.key.vip], IP: netip.AddrFrom16(s.key.ip).Unmap(), MAC: mac,
				LastSeen: time.UnixMilli(s.seen), Protected: l == listProtected})
		}
	}
	return cs
}

// The wire form of the table, exchanged between hosts: version 2 is
//
//	version (1 byte), VIP count (2 bytes), each VIP (16 bytes), then per client:
//	flags (1 byte: 1 = IPv4, 2 = protected), VIP index (2 bytes),
//	IP (4 or 16 bytes), MAC (6 bytes), age in seconds at encoding (4 bytes)
//
// 17 bytes for an IPv4 client. Ages rather than times keep the hosts'
// clocks out of it.
const (
	tableWireVersion = 2
	flagIPv4         = 1
	flagProtected    = 2
	entrySize4       = 1 + 2 + 4 + 6 + 4
	entrySize6       = 1 + 2 + 16 + 6 + 4
)

// MarshalBinary encodes the whole table for another host.
func (t *ClientTable) MarshalBinary() ([]byte, error) {
	return t.Encode(time.Now(), time.Time{}), nil
}

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
	nowMS, sinceMS := now.UnixMilli(), since.UnixMilli()
	if since.IsZero() {
		sinceMS = -1 << 63
	}
	n := 0
	for i := range t.slots {
		if s := &t.slots[i]; s.list != listFree && s.shared >= sinceMS {
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
	if limit > 0 && len(t.slots) > 0 {
		start = t.cursor % len(t.slots)
	}
	for j := range t.slots {
		i := (start + j) % len(t.slots)
		s := &t.slots[i]
		if s.list == listFree || s.shared < sinceMS {
			continue
		}
		if limit > 0 && len(b)+entrySize6 > limit {
			t.cursor = i
			break
		}
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
		age := max(0, (nowMS-s.seen)/1000)
		b = binary.BigEndian.AppendUint32(b, uint32(min(age, 1<<32-1)))
	}
	return b
}

var (
	errWireVersion = errors.New("client table: unknown wire version")
	errTruncated   = errors.New("client table: truncated")
)

// Merge learns the clients in another host's encoded table and returns those
// that were new here. Entries older than the ttl are skipped; those the
// other host protects are protected here too. What it learns is not
// gossiped again: Merge is for a whole table, sent to a host that joins.
func (t *ClientTable) Merge(b []byte, now time.Time) ([]Client, error) {
	return t.merge(b, now, false)
}

// MergeChanges is Merge for the changes a peer sends in a periodic
// exchange: what is news here is passed on in this host's own exchanges, so
// that it reaches every host of a big cluster.
func (t *ClientTable) MergeChanges(b []byte, now time.Time) ([]Client, error) {
	return t.merge(b, now, true)
}

func (t *ClientTable) merge(b []byte, now time.Time, relay bool) ([]Client, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if b[0] != tableWireVersion {
		return nil, errWireVersion
	}
	if len(b) < 3 {
		return nil, errTruncated
	}
	nv := int(binary.BigEndian.Uint16(b[1:3]))
	b = b[3:]
	if len(b) < 16*nv {
		return nil, errTruncated
	}
	vips := make([]netip.Addr, nv)
	for i := range vips {
		vips[i] = netip.AddrFrom16([16]byte(b[16*i:])).Unmap()
	}
	b = b[16*nv:]

	t.mu.Lock()
	defer t.mu.Unlock()
	nowMS := now.UnixMilli()
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
		if vi >= nv {
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
		k, _ := t.key(vips[vi], ip, true)
		_, known := t.byKey[k]
		seen := nowMS - age.Milliseconds()
		mark := int64(0)
		if relay {
			mark = nowMS
		}
		if t.learn(k, [6]byte(rest[:6]), seen, e[0]&flagProtected != 0, mark, relay) && !known {
			added = append(added, t.client(&t.slots[t.byKey[k]]))
		}
	}
	return added, nil
}

// Known is a client of some VIP, as the kernel fast path needs it.
type Known struct {
	IP  netip.Addr
	MAC [6]byte
}

// AppendProtected appends the protected clients of vip to dst and returns
// it.
func (t *ClientTable) AppendProtected(dst []Known, vip netip.Addr) []Known {
	t.mu.Lock()
	defer t.mu.Unlock()
	vi, ok := t.vipIdx[vip]
	if !ok {
		return dst
	}
	for i := range t.slots {
		if s := &t.slots[i]; s.list == listProtected && s.key.vip == vi {
			dst = append(dst, Known{IP: netip.AddrFrom16(s.key.ip).Unmap(), MAC: s.mac})
		}
	}
	return dst
}
