package policy

import (
	"encoding/binary"
	"net/netip"

	"github.com/cespare/xxhash/v2"

	"github.com/arpshare/arpshare/gossip"
)

// Rendezvous returns the name of the candidate that answers client for vip, or ""
// when there is no candidate. It is weighted rendezvous (highest random
// weight) hashing: a candidate of weight w holds w identities and scores the
// best of them. Removing a candidate moves only the clients it owned, spread
// over the others by weight; the result does not depend on candidate order.
// Its version is gossip.Algorithm, which every host gossips.
func Rendezvous(candidates []gossip.Candidate, vip, client netip.Addr) string {
	var (
		best      string
		bestScore uint64
	)
	for _, c := range candidates {
		s := score(c, vip, client)
		if best == "" || s > bestScore || (s == bestScore && c.Name < best) {
			best, bestScore = c.Name, s
		}
	}
	return best
}

// score is XXH64, a specified hash that is the same on every CPU and Go
// version, over name, 0x00, identity (big endian), and the VIP and client as
// 16-byte addresses (IPv4 mapped into IPv6).
func score(c gossip.Candidate, vip, client netip.Addr) uint64 {
	// Most names fit the small buffer; zeroing a big one for every
	// candidate of every frame costs as much as the hash.
	var small [80]byte
	var big []byte
	b := small[:0]
	if len(c.Name)+5+32 > len(small) {
		big = make([]byte, 0, len(c.Name)+5+32)
		b = big
	}
	b = append(b, c.Name...)
	b = append(b, 0, 0, 0, 0, 0)
	idx := len(b) - 4
	v, cl := vip.As16(), client.As16()
	b = append(b, v[:]...)
	b = append(b, cl[:]...)

	// gossip bounds weights as it decodes them; bounded here too, so that
	// no candidate however made can stall a decision.
	w := min(max(c.Weight, 1), gossip.MaxWeight)
	var top uint64
	for i := range w {
		binary.BigEndian.PutUint32(b[idx:], uint32(i))
		if h := xxhash.Sum64(b); i == 0 || h > top {
			top = h
		}
	}
	return top
}
