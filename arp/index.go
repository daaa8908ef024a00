package arp

import "hash/maphash"

// The client table's storage. A Go map of key to slot number took about
// 40 bytes a client beside the slot's 56 (its key again, its growth), and a
// slice of slots grown by append as much again in slack and in the copy
// each growth leaves behind: at 1,000,000 clients, a quarter of a daemon's
// heap. Slots live in fixed pages instead, and the key is found by an
// open-addressing index of slot numbers, 4 bytes a cell, from 3/8 to 3/4
// full: 56 bytes a client and 5 to 11 of index.

// pageBits sets a page's size: 1,024 slots, 56 KiB.
const pageBits = 10

const pageSize = 1 << pageBits

// slotPages holds the table's slots, numbered from 0, in pages that never
// move: growing allocates a page, not a larger copy of them all.
type slotPages struct {
	pages []*[pageSize]slot
	n     int // slots in use or on the free list
}

func (p *slotPages) at(i uint32) *slot { return &p.pages[i>>pageBits][i&(pageSize-1)] }

// add returns a new slot's number.
func (p *slotPages) add() uint32 {
	if p.n == len(p.pages)*pageSize {
		p.pages = append(p.pages, new([pageSize]slot))
	}
	p.n++
	return uint32(p.n - 1)
}

// keyIndex finds a slot by its key: linear probing over cells that hold a
// slot number plus one (0: empty), the key itself in the slot. The hash
// is seeded per table, so that made-up senders cannot be chosen to
// collide.
type keyIndex struct {
	seed  maphash.Seed
	cells []uint32
	n     int
}

const minCells = 64

func newKeyIndex() keyIndex { return keyIndex{seed: maphash.MakeSeed()} }

func (x *keyIndex) hash(k *tableKey) uint64 {
	var b [18]byte
	copy(b[:16], k.ip[:])
	b[16], b[17] = byte(k.vip>>8), byte(k.vip)
	return maphash.Bytes(x.seed, b[:])
}

// get returns the slot of key k.
func (x *keyIndex) get(k *tableKey, slots *slotPages) (uint32, bool) {
	if x.n == 0 {
		return 0, false
	}
	mask := uint64(len(x.cells) - 1)
	for c := x.hash(k) & mask; ; c = (c + 1) & mask {
		v := x.cells[c]
		if v == 0 {
			return 0, false
		}
		if slots.at(v-1).key == *k {
			return v - 1, true
		}
	}
}

// put adds slot i, whose key is not in the index yet.
func (x *keyIndex) put(i uint32, slots *slotPages) {
	if (x.n+1)*4 > len(x.cells)*3 {
		x.resize(max(minCells, 2*len(x.cells)), slots)
	}
	x.place(i, slots)
	x.n++
}

func (x *keyIndex) place(i uint32, slots *slotPages) {
	mask := uint64(len(x.cells) - 1)
	c := x.hash(&slots.at(i).key) & mask
	for x.cells[c] != 0 {
		c = (c + 1) & mask
	}
	x.cells[c] = i + 1
}

func (x *keyIndex) resize(cells int, slots *slotPages) {
	old := x.cells
	x.cells = make([]uint32, cells)
	for _, v := range old {
		if v != 0 {
			x.place(v-1, slots)
		}
	}
}

// del removes slot i, whose key is k, shifting back the cells after it
// that would no longer be found (no tombstones: a table that churns keeps
// its probes short).
func (x *keyIndex) del(k *tableKey, i uint32, slots *slotPages) {
	mask := uint64(len(x.cells) - 1)
	c := x.hash(k) & mask
	for x.cells[c] != i+1 {
		c = (c + 1) & mask
	}
	x.n--
	for j := c; ; {
		x.cells[c] = 0
		for {
			j = (j + 1) & mask
			v := x.cells[j]
			if v == 0 {
				return
			}
			home := x.hash(&slots.at(v-1).key) & mask
			// The entry at j stays unless its home is cyclically
			// outside (c, j]: then the hole at c breaks its probe.
			if (c <= j && (home <= c || home > j)) || (c > j && home <= c && home > j) {
				x.cells[c] = v
				c = j
				break
			}
		}
	}
}
