package policy

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/arpshare/arpshare/gossip"
)

var testVIP = netip.MustParseAddr("198.18.0.200")

func hosts(n int) []gossip.Candidate {
	cs := make([]gossip.Candidate, n)
	for i := range cs {
		cs[i] = gossip.Candidate{Name: fmt.Sprintf("host-%02d", i), Weight: 1}
	}
	return cs
}

func clients(n int) []netip.Addr {
	as := make([]netip.Addr, n)
	for i := range as {
		as[i] = netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
	}
	return as
}

func assign(cs []gossip.Candidate, clients []netip.Addr) map[netip.Addr]string {
	m := make(map[netip.Addr]string, len(clients))
	for _, c := range clients {
		m[c] = Rendezvous(cs, testVIP, c)
	}
	return m
}

func TestOwnerDistribution(t *testing.T) {
	t.Parallel()
	const nClients = 10000
	for _, n := range []int{3, 8, 32} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			cs, cls := hosts(n), clients(nClients)
			base := assign(cs, cls)

			// Every host computes the same owner, whatever its member order.
			r := rand.New(rand.NewPCG(1, uint64(n)))
			for range 5 {
				shuffled := append([]gossip.Candidate(nil), cs...)
				r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
				for c, want := range base {
					if got := Rendezvous(shuffled, testVIP, c); got != want {
						t.Fatalf("client %s: owner %s after shuffle, want %s", c, got, want)
					}
				}
			}

			// The busiest host is within the multinomial noise of the mean:
			// 4.5 standard deviations is far past chance for n ≤ 32.
			count := map[string]int{}
			for _, o := range base {
				count[o]++
			}
			mean := float64(nClients) / float64(n)
			sd := math.Sqrt(mean * (1 - 1/float64(n)))
			for _, c := range cs {
				if d := math.Abs(float64(count[c.Name]) - mean); d > 4.5*sd {
					t.Errorf("%s owns %d clients, mean %.0f, sd %.1f", c.Name, count[c.Name], mean, sd)
				}
			}

			// Removing a host moves only its own clients.
			gone := cs[n/2].Name
			after := assign(append(append([]gossip.Candidate(nil), cs[:n/2]...), cs[n/2+1:]...), cls)
			for c, o := range base {
				if o != gone && after[c] != o {
					t.Fatalf("client %s moved from live %s to %s when %s left", c, o, after[c], gone)
				}
				if after[c] == gone {
					t.Fatalf("client %s still owned by removed %s", c, gone)
				}
			}

			// Adding a host moves about 1/(n+1) of the clients, all to it.
			added := append(append([]gossip.Candidate(nil), cs...), gossip.Candidate{Name: "new-host", Weight: 1})
			grown := assign(added, cls)
			moved := 0
			for c, o := range base {
				if grown[c] != o {
					moved++
					if grown[c] != "new-host" {
						t.Fatalf("client %s moved from %s to %s, not to the new host", c, o, grown[c])
					}
				}
			}
			p := 1 / float64(n+1)
			want, sdMoved := p*nClients, math.Sqrt(nClients*p*(1-p))
			if math.Abs(float64(moved)-want) > 4.5*sdMoved {
				t.Errorf("adding a host moved %d clients, want about %.0f (sd %.1f)", moved, want, sdMoved)
			}
		})
	}
}

func TestOwnerWeights(t *testing.T) {
	t.Parallel()
	const nClients = 10000
	cs := []gossip.Candidate{{Name: "a", Weight: 1}, {Name: "b", Weight: 1}, {Name: "c", Weight: 3}, {Name: "d", Weight: 5}}
	count := map[string]int{}
	for _, c := range clients(nClients) {
		count[Rendezvous(cs, testVIP, c)]++
	}
	total := 0
	for _, c := range cs {
		total += c.Weight
	}
	for _, c := range cs {
		p := float64(c.Weight) / float64(total)
		mean, sd := p*nClients, math.Sqrt(nClients*p*(1-p))
		if d := math.Abs(float64(count[c.Name]) - mean); d > 4.5*sd {
			t.Errorf("%s (weight %d) owns %d clients, want about %.0f (sd %.1f)", c.Name, c.Weight, count[c.Name], mean, sd)
		}
	}
}

func TestOwnerEdgeCases(t *testing.T) {
	t.Parallel()
	c := netip.MustParseAddr("198.18.1.7")
	if got := Rendezvous(nil, testVIP, c); got != "" {
		t.Errorf("Rendezvous(no candidates) = %q, want empty", got)
	}
	if got := Rendezvous([]gossip.Candidate{{Name: "only", Weight: 1}}, testVIP, c); got != "only" {
		t.Errorf("Rendezvous(one candidate) = %q, want only", got)
	}
	// A weight below one counts as one rather than making a host unreachable.
	if got := Rendezvous([]gossip.Candidate{{Name: "zero", Weight: 0}}, testVIP, c); got != "zero" {
		t.Errorf("Rendezvous(weight 0) = %q, want zero", got)
	}
	// The same name twice (a config mistake) resolves the same way everywhere.
	if a, b := Rendezvous([]gossip.Candidate{{Name: "x", Weight: 1}, {Name: "x", Weight: 1}}, testVIP, c), "x"; a != b {
		t.Errorf("Rendezvous(duplicate) = %q, want %q", a, b)
	}
}

// TestScoreStable pins the hash so that a change to the ownership function
// (which must come with a new Algorithm number) cannot slip in unnoticed.
func TestScoreStable(t *testing.T) {
	t.Parallel()
	got := score(gossip.Candidate{Name: "h1", Weight: 1}, testVIP, netip.MustParseAddr("198.18.0.101"))
	const want = uint64(0x93fc89549fa018)
	if got != want {
		t.Errorf("score = %#x, want %#x", got, want)
	}
}

func BenchmarkOwner(b *testing.B) {
	for _, n := range []int{3, 32} {
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			cs, cls := hosts(n), clients(1024)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				Rendezvous(cs, testVIP, cls[i%len(cls)])
			}
		})
	}
}

// TestRendezvousHugeWeight: a weight beyond gossip.MaxWeight, however it got
// here, scores as MaxWeight: a decision costs at most MaxWeight hashes per
// candidate.
func TestRendezvousHugeWeight(t *testing.T) {
	t.Parallel()
	vip := netip.MustParseAddr("198.18.0.200")
	done := make(chan struct{})
	for i := range 50 {
		client := netip.AddrFrom4([4]byte{198, 18, 1, byte(i)})
		huge := []gossip.Candidate{{Name: "a", Weight: 1 << 62}, {Name: "b", Weight: 3}}
		bounded := []gossip.Candidate{{Name: "a", Weight: gossip.MaxWeight}, {Name: "b", Weight: 3}}
		go func() {
			defer func() { done <- struct{}{} }()
			if got, want := Rendezvous(huge, vip, client), Rendezvous(bounded, vip, client); got != want {
				t.Errorf("client %s: weight 2^62 owner %s, weight MaxWeight owner %s", client, got, want)
			}
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("a decision with a huge weight did not finish in 10 s")
		}
	}
}
