package arp

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestKeyIndexChurn: the index finds every key the table holds and none
// it dropped, through growth and heavy churn in a small key space, where
// deletions must shift back the cells behind them (a wrong shift loses a
// key whose probe crossed the hole).
func TestKeyIndexChurn(t *testing.T) {
	// 47 keys keep the smallest index (64 cells) nearly 3/4 full, its
	// clusters wrapping round its end; 3,000 take it through growths.
	for _, keep := range []int{47, 3000} {
		churn(t, keep, 200_000, max(1, keep/10))
	}
}

// churn adds keys (of 10 times as many) until keep are in the index, then
// takes one out or puts one in at random, and checks every key every
// check operations.
func churn(t *testing.T, keep, ops, check int) {
	rng := rand.New(rand.NewPCG(1, uint64(keep)))
	var slots slotPages
	x := newKeyIndex()
	model := map[tableKey]uint32{}
	var present []tableKey
	var free []uint32
	space := 10 * keep
	key := func(n int) tableKey {
		return tableKey{ip: netip.AddrFrom4([4]byte{198, 18, byte(n >> 8), byte(n)}).As16(), vip: uint16(n % 3)}
	}
	for op := range ops {
		if len(present) >= keep || (len(present) > 0 && rng.IntN(2) == 0) {
			j := rng.IntN(len(present))
			k := present[j]
			present[j] = present[len(present)-1]
			present = present[:len(present)-1]
			i := model[k]
			x.del(&k, i, &slots)
			*slots.at(i) = slot{}
			delete(model, k)
			free = append(free, i)
		} else if k := key(rng.IntN(space)); !has(model, k) {
			var i uint32
			if len(free) > 0 {
				i, free = free[len(free)-1], free[:len(free)-1]
			} else {
				i = slots.add()
			}
			slots.at(i).key = k
			x.put(i, &slots)
			model[k] = i
			present = append(present, k)
		}
		if op%check != 0 {
			continue
		}
		if x.n != len(model) {
			t.Fatalf("%d keys, op %d: index holds %d keys, want %d", keep, op, x.n, len(model))
		}
		for n := range space {
			k := key(n)
			got, ok := x.get(&k, &slots)
			want, wantOK := model[k]
			if ok != wantOK || got != want {
				t.Fatalf("%d keys, op %d: key %d: slot %d, %v; want %d, %v", keep, op, n, got, ok, want, wantOK)
			}
		}
	}
}

// TestClientTablePagesAndIndex: a table past several pages and index
// growths, then mostly expired and refilled, still finds every client at
// its own MAC, and reuses the freed slots rather than growing.
func TestClientTablePagesAndIndex(t *testing.T) {
	const n = 3*pageSize + 17
	tb := NewClientTable(2*n, time.Hour)
	mac := func(i int) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)} }
	old := time.Now()
	for i := range n {
		tb.Learn(vip, fake(i), mac(i), old)
	}
	for i := range n / 2 {
		tb.Learn(vip, fake(i), mac(i), old.Add(2*time.Hour))
	}
	if got := tb.Expire(old.Add(90 * time.Minute)); got != n-n/2 {
		t.Fatalf("expired %d, want %d", got, n-n/2)
	}
	for i := n; i < 2*n-n/2; i++ {
		tb.Learn(vip, fake(i), mac(i), old.Add(2*time.Hour))
	}
	if tb.Len() != n || tb.slots.n != n {
		t.Fatalf("%d clients in %d slots, want %d in as many", tb.Len(), tb.slots.n, n)
	}
	for i := range 2*n - n/2 {
		m, ok := tb.MAC(vip, fake(i))
		if want := i < n/2 || i >= n; ok != want || (ok && net.HardwareAddr(m[:]).String() != mac(i).String()) {
			t.Fatalf("client %d: MAC %v, %v; want known %v at %s", i, m, ok, want, mac(i))
		}
	}
}

// TestClientTableAll: a walk yields every client once, with what Clients
// says of it, across chunks, and lets the caller use the table meanwhile
// (its lock is not held while it yields).
func TestClientTableAll(t *testing.T) {
	const n = 2*walkChunk + 5
	tb := NewClientTable(2*n, time.Hour)
	now := time.Now()
	for i := range n {
		tb.Learn(vip, fake(i), clientMAC, now.Add(time.Duration(i)*time.Millisecond))
	}
	tb.Protect(vip, fake(7))
	want := map[netip.Addr]Client{}
	for _, c := range tb.Clients() {
		want[c.IP] = c
	}
	seen := map[netip.Addr]bool{}
	for e := range tb.All() {
		tb.Asked(e.VIP, e.IP, now) // deadlocks if the walk held the lock
		c, ok := want[e.IP]
		switch {
		case !ok || seen[e.IP]:
			t.Fatalf("client %s yielded again, or unknown", e.IP)
		case e.VIP != c.VIP || e.MAC != [6]byte(c.MAC) || e.Protected != c.Protected ||
			!e.LastSeen.Equal(c.LastSeen) || !e.FirstSeen.Equal(c.FirstSeen):
			t.Fatalf("walk says %+v, Clients says %+v", e, c)
		}
		seen[e.IP] = true
	}
	if len(seen) != n || !want[fake(7)].Protected {
		t.Fatalf("walk yielded %d clients, want %d (client 7 protected: %v)", len(seen), n, want[fake(7)].Protected)
	}
	stopped := 0
	for range tb.All() {
		if stopped++; stopped == 3 {
			break
		}
	}
}

func has(m map[tableKey]uint32, k tableKey) bool { _, ok := m[k]; return ok }
