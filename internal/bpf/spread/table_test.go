package spread

import (
	"math"
	"net/netip"
	"slices"
	"testing"
)

func hosts(weights ...int) []Host {
	var out []Host
	for i, w := range weights {
		out = append(out, Host{Name: string(rune('a' + i)), Weight: w, MAC: [6]byte{0x02, 0, 0, 0, 0, byte(i + 1)}})
	}
	return out
}

func shares(table []Slot) map[[6]byte]int {
	n := map[[6]byte]int{}
	for _, s := range table {
		n[s.MAC]++
	}
	return n
}

// TestTableShares checks that each host gets slots in proportion to its
// weight, within a few standard deviations of a multinomial draw.
func TestTableShares(t *testing.T) {
	t.Parallel()
	for _, weights := range [][]int{{1, 1, 1}, {1, 2, 3}, {1, 1, 1, 1, 1, 1, 1, 1}} {
		hs := hosts(weights...)
		n := shares(Table(vip4, hs, "a"))
		total := 0
		for _, w := range weights {
			total += w
		}
		for i, h := range hs {
			p := float64(weights[i]) / float64(total)
			want, sd := p*Slots, math.Sqrt(Slots*p*(1-p))
			if got := float64(n[h.MAC]); math.Abs(got-want) > 4*sd {
				t.Errorf("weights %v: host %s has %v slots, want %.0f ± %.0f", weights, h.Name, got, want, 4*sd)
			}
		}
	}
}

// TestTableStable checks what makes a director's death harmless: the table
// does not depend on who computes it or in which order it lists the hosts,
// and a host that leaves gives up its own slots and no other.
func TestTableStable(t *testing.T) {
	t.Parallel()
	hs := hosts(1, 1, 2)
	a := Table(vip4, hs, "a")
	reversed := slices.Clone(hs)
	slices.Reverse(reversed)
	b := Table(vip4, reversed, "b")
	for i := range a {
		if a[i].MAC != b[i].MAC {
			t.Fatalf("slot %d: %x from a, %x from b", i, a[i].MAC, b[i].MAC)
		}
		if a[i].Local != (a[i].MAC == hs[0].MAC) || b[i].Local != (b[i].MAC == hs[1].MAC) {
			t.Fatalf("slot %d: local marks wrong", i)
		}
	}
	without := Table(vip4, hs[1:], "b")
	moved := 0
	for i := range a {
		switch {
		case a[i].MAC == hs[0].MAC:
			moved++
		case without[i].MAC != a[i].MAC:
			t.Errorf("slot %d moved from %x to %x though its host stayed", i, a[i].MAC, without[i].MAC)
		}
	}
	if moved == 0 {
		t.Error("the host that left had no slots")
	}
	if Table(vip6, hs, "a") == nil || Table(vip4, nil, "a") != nil {
		t.Error("want a table for hosts, none without")
	}
	if x, y := Table(vip4, hs, "a"), Table(netip.MustParseAddr("198.18.0.201"), hs, "a"); slices.Equal(x, y) {
		t.Error("two VIPs have the same table")
	}
}

// BenchmarkTable measures making one VIP's table, which every host does on
// each change of the VIP's eligible hosts.
func BenchmarkTable(b *testing.B) {
	for _, c := range []struct {
		name    string
		weights []int
	}{
		{"3_hosts_weight_1", []int{1, 1, 1}},
		{"16_hosts_weight_1", slices.Repeat([]int{1}, 16)},
		{"16_hosts_weight_10", slices.Repeat([]int{10}, 16)},
	} {
		b.Run(c.name, func(b *testing.B) {
			hs := hosts(c.weights...)
			for range b.N {
				Table(vip4, hs, "a")
			}
		})
	}
}
