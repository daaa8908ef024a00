package arp

import (
	"container/list"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Client is one client of one VIP: it asked for the VIP from IP with MAC.
type Client struct {
	VIP      netip.Addr       `json:"vip"`
	IP       netip.Addr       `json:"ip"`
	MAC      net.HardwareAddr `json:"mac"`
	LastSeen time.Time        `json:"last_seen"`
}

type clientKey struct{ vip, ip netip.Addr }

// ClientTable remembers the clients of every VIP. Entries live long (clients
// refresh only by unicast to their owner, so other hosts rarely hear them
// again); the table is capped, evicting the least recently seen.
type ClientTable struct {
	max int
	ttl time.Duration

	mu    sync.Mutex
	byKey map[clientKey]*list.Element
	lru   *list.List // front: most recently seen
}

// NewClientTable returns a table of at most max entries that forgets a client
// not seen for ttl.
func NewClientTable(max int, ttl time.Duration) *ClientTable {
	return &ClientTable{max: max, ttl: ttl, byKey: map[clientKey]*list.Element{}, lru: list.New()}
}

// Learn records that client ip with mac asked for vip at now. It reports
// whether the client is new to the table or changed its MAC.
func (t *ClientTable) Learn(vip, ip netip.Addr, mac net.HardwareAddr, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.learn(Client{VIP: vip, IP: ip, MAC: mac, LastSeen: now})
}

func (t *ClientTable) learn(c Client) bool {
	k := clientKey{c.VIP, c.IP}
	if e, ok := t.byKey[k]; ok {
		old := e.Value.(*Client)
		if c.LastSeen.Before(old.LastSeen) {
			return false
		}
		changed := !slices.Equal(old.MAC, c.MAC)
		old.MAC, old.LastSeen = slices.Clone(c.MAC), c.LastSeen
		t.lru.MoveToFront(e)
		return changed
	}
	c.MAC = slices.Clone(c.MAC)
	t.byKey[k] = t.lru.PushFront(&c)
	for t.lru.Len() > t.max {
		last := t.lru.Back()
		delete(t.byKey, clientKey{last.Value.(*Client).VIP, last.Value.(*Client).IP})
		t.lru.Remove(last)
	}
	return true
}

// Get returns the client ip of vip.
func (t *ClientTable) Get(vip, ip netip.Addr) (Client, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.byKey[clientKey{vip, ip}]
	if !ok {
		return Client{}, false
	}
	return *e.Value.(*Client), true
}

// Expire forgets clients not seen since now minus the table's ttl.
func (t *ClientTable) Expire(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	// Merged entries keep their own age, so the list is only roughly in
	// last-seen order: look at every entry.
	for e := t.lru.Front(); e != nil; {
		next := e.Next()
		if c := e.Value.(*Client); now.Sub(c.LastSeen) >= t.ttl {
			delete(t.byKey, clientKey{c.VIP, c.IP})
			t.lru.Remove(e)
			n++
		}
		e = next
	}
	return n
}

// Forget drops every client of vip (a VIP no longer served).
func (t *ClientTable) Forget(vip netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for e := t.lru.Front(); e != nil; {
		next := e.Next()
		if c := e.Value.(*Client); c.VIP == vip {
			delete(t.byKey, clientKey{c.VIP, c.IP})
			t.lru.Remove(e)
		}
		e = next
	}
}

// Len returns the number of clients known.
func (t *ClientTable) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lru.Len()
}

// Clients returns a copy of every entry, most recently seen first.
func (t *ClientTable) Clients() []Client {
	t.mu.Lock()
	defer t.mu.Unlock()
	cs := make([]Client, 0, t.lru.Len())
	for e := t.lru.Front(); e != nil; e = e.Next() {
		cs = append(cs, *e.Value.(*Client))
	}
	return cs
}

// The wire form of the table, exchanged between hosts so that a host that
// just started knows the clients it must take back: a version byte, then per
// client 16 bytes VIP, 16 bytes IP, 6 bytes MAC, 8 bytes last seen (Unix ms).
const (
	tableWireVersion = 1
	entrySize        = 16 + 16 + 6 + 8
)

// MarshalBinary encodes the table for another host.
func (t *ClientTable) MarshalBinary() ([]byte, error) {
	cs := t.Clients()
	b := make([]byte, 1, 1+len(cs)*entrySize)
	b[0] = tableWireVersion
	for _, c := range cs {
		if len(c.MAC) != 6 {
			continue
		}
		v, ip := c.VIP.As16(), c.IP.As16()
		b = append(b, v[:]...)
		b = append(b, ip[:]...)
		b = append(b, c.MAC...)
		b = binary.BigEndian.AppendUint64(b, uint64(c.LastSeen.UnixMilli()))
	}
	return b, nil
}

// Merge learns the clients in another host's encoded table and returns those
// that were new here. Entries older than the ttl are skipped.
func (t *ClientTable) Merge(b []byte, now time.Time) ([]Client, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if b[0] != tableWireVersion {
		return nil, errors.New("client table: unknown wire version")
	}
	b = b[1:]
	if len(b)%entrySize != 0 {
		return nil, errors.New("client table: truncated")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var added []Client
	for ; len(b) > 0; b = b[entrySize:] {
		c := Client{
			VIP:      netip.AddrFrom16([16]byte(b[0:16])).Unmap(),
			IP:       netip.AddrFrom16([16]byte(b[16:32])).Unmap(),
			MAC:      net.HardwareAddr(slices.Clone(b[32:38])),
			LastSeen: time.UnixMilli(int64(binary.BigEndian.Uint64(b[38:46]))),
		}
		if c.LastSeen.After(now) {
			c.LastSeen = now
		}
		if now.Sub(c.LastSeen) >= t.ttl {
			continue
		}
		_, known := t.byKey[clientKey{c.VIP, c.IP}]
		if t.learn(c) && !known {
			added = append(added, c)
		}
	}
	return added, nil
}
