package spread

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
)

// Host is a host that serves a VIP's spread flows.
type Host struct {
	Name   string
	Weight int
	MAC    [6]byte
}

// slotAddr is the address that stands for slot i in the rendezvous hash:
// the table gives each slot to the host that would own a client of that
// address, so a host that leaves gives up only its own slots, spread over
// the others by weight, and every host computes the same table from the
// same view.
func slotAddr(i int) netip.Addr {
	var b [16]byte
	copy(b[:], "spread-slot\x00")
	binary.BigEndian.PutUint32(b[12:], uint32(i))
	return netip.AddrFrom16(b)
}

// Table returns vip's table over hosts; self's slots are marked local. No
// hosts: an empty table (nobody to spread to).
func Table(vip netip.Addr, hosts []Host, self string) []Slot {
	if len(hosts) == 0 {
		return nil
	}
	cands := make([]gossip.Candidate, len(hosts))
	byName := make(map[string]Host, len(hosts))
	for i, h := range hosts {
		cands[i] = gossip.Candidate{Name: h.Name, Weight: h.Weight}
		byName[h.Name] = h
	}
	table := make([]Slot, Slots)
	for i := range table {
		h := byName[policy.Rendezvous(cands, vip, slotAddr(i))]
		table[i] = Slot{MAC: h.MAC, Local: h.Name == self}
	}
	return table
}

// FlowHash is the kernel program's flow hash (flow in spread.c): of the
// addresses, and of the ports and protocol when ports is true. Tests and
// tools use it to know where a flow goes.
func FlowHash(src, dst netip.Addr, sport, dport uint16, proto uint8, ports bool) uint32 {
	var h, n uint32
	words := func(a netip.Addr) {
		if a.Is4() {
			b := a.As4()
			h = mix(h, binary.BigEndian.Uint32(b[:]))
			return
		}
		b := a.As16()
		for i := 0; i < 16; i += 4 {
			h = mix(h, binary.BigEndian.Uint32(b[i:]))
		}
	}
	words(src)
	words(dst)
	n = 8
	if src.Is6() {
		n = 32
	}
	if ports {
		h = mix(h, uint32(sport)<<16|uint32(dport))
		h = mix(h, uint32(proto))
		n += 8
	}
	return fmix(h ^ n)
}

// SlotOf is the slot of a flow's hash.
func SlotOf(hash uint32) int { return int(hash & (Slots - 1)) }

func mix(h, w uint32) uint32 {
	w *= 0xcc9e2d51
	w = w<<15 | w>>17
	w *= 0x1b873593
	h ^= w
	h = h<<13 | h>>19
	return h*5 + 0xe6546b64
}

func fmix(h uint32) uint32 {
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

// withPrev marks the slots of table that are this host's and were another
// live host's in old with that host and deadline, and those that were this
// host's and are another's as WasLocal until deadline; it keeps the marks
// of old still running (before now) on slots that stay where they are. For
// the first table, old is the table without this host: a host joining
// takes its slots from the others.
func withPrev(table, old []Slot, live map[[6]byte]bool, now, deadline time.Duration) {
	if len(old) != len(table) {
		return
	}
	for i := range table {
		t, o := &table[i], old[i]
		switch {
		case t.Local && o.MAC != t.MAC && !o.Local && live[o.MAC]:
			t.Prev, t.Deadline = o.MAC, deadline
		case t.Local && o.Local && o.Deadline > now && live[o.Prev]:
			t.Prev, t.Deadline = o.Prev, o.Deadline
		case !t.Local && o.Local:
			t.WasLocal, t.Deadline = true, deadline
		case !t.Local && o.WasLocal && o.MAC == t.MAC && o.Deadline > now:
			t.WasLocal, t.Deadline = true, o.Deadline
		}
	}
}
