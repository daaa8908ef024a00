package gossip

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestIdleLoopBuildsNoViews: at rest, the loop's tick builds no view (each
// one allocates, and the tick comes every probe interval); it builds one
// only when the view changes.
func TestIdleLoopBuildsNoViews(t *testing.T) {
	t.Parallel()
	nodes := startMemCluster(t, 3)
	waitAllAlive(t, nodes)
	m1 := nodes[0]
	wasted := 0
	last := m1.c.View()
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		v := m1.c.View()
		if v != last && sameView(v, last) {
			wasted++
		}
		last = v
	}
	if wasted > 1 {
		t.Errorf("over 2 s at rest, m1 built %d views the same as the one before (one per probe interval is 20)", wasted)
	}
}

// idleCluster is a cluster that does not run, with members h1 (itself), h2
// and h3, as memberlist would report them, and a view built of them.
func idleCluster(t *testing.T) *Cluster {
	t.Helper()
	meta, err := Meta{Version: MetaVersion, Algorithm: Algorithm, Weight: 1}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	c := NewCluster(ClusterConfig{
		Name: "h1", Bind: netip.MustParseAddrPort("198.18.0.11:7946"),
		ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond, SuspicionMult: 4,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	for i, name := range []string{"h1", "h2", "h3"} {
		events{c}.NotifyJoin(&memberlist.Node{Name: name, Addr: []byte{198, 18, 0, byte(11 + i)}, Port: 7946, Meta: meta})
	}
	c.rebuild()
	return c
}

// TestDue: the tick builds a view when one built then would differ: a
// member's time to answer ran out, one that had not answered did, a held
// death's time ran out, or the reason peers refuse this host changed; and
// not otherwise.
func TestDue(t *testing.T) {
	t.Parallel()
	c := idleCluster(t)
	now := time.Now()
	if c.due(now) {
		t.Fatal("due with nothing changed")
	}
	c.mu.Lock()
	window := c.probeWindow()
	c.mu.Unlock()
	if !c.due(now.Add(window + time.Millisecond)) {
		t.Error("not due once h2 and h3 had no time left to answer")
	}

	c.mu.Lock()
	c.heard["h2"] = now.Add(-2 * window)
	c.mu.Unlock()
	c.rebuild()
	if m, _ := c.View().Member("h2"); !m.Unreachable {
		t.Fatalf("h2, unheard for %s, shown reachable", 2*window)
	}
	if c.due(time.Now()) {
		t.Error("due with h2 shown unreachable and still unheard")
	}
	pings{c}.NotifyPingComplete(&memberlist.Node{Name: "h2"}, 0, nil)
	if !c.due(time.Now()) {
		t.Error("not due once h2, shown unreachable, answered")
	}
	c.rebuild()

	// Unheard for long, so that only the hold's end changes the view.
	events{c}.NotifyLeave(&memberlist.Node{Name: "h3", Addr: []byte{198, 18, 0, 13}, Port: 7946})
	c.mu.Lock()
	c.heard["h2"], c.heard["h3"] = now.Add(-time.Hour), now.Add(-time.Hour)
	until, held := c.hold["h3"]
	c.mu.Unlock()
	c.rebuild()
	if !held {
		t.Fatal("h3's death not held")
	}
	if c.due(until.Add(-time.Millisecond)) {
		t.Error("due before h3's hold ran out")
	}
	if !c.due(until) {
		t.Error("not due once h3's hold ran out")
	}

	c.mu.Lock()
	c.conflictAt, c.conflictWith = time.Now(), "198.18.0.99:7946"
	c.mu.Unlock()
	if !c.due(time.Now()) {
		t.Error("not due once another host claimed this host's name")
	}
}

// TestLagged: a tick that came while the loop waited measures how late it
// came; one that came while the loop worked measures nothing.
func TestLagged(t *testing.T) {
	t.Parallel()
	waiting := time.Now()
	now := waiting.Add(time.Second)
	if lag, ok := lagged(now, waiting.Add(100*time.Millisecond), waiting); !ok || lag != 900*time.Millisecond {
		t.Errorf("a tick 900 ms ago, the loop waiting before it: lag %s, %v; want 900 ms", lag, ok)
	}
	if _, ok := lagged(now, waiting.Add(-time.Millisecond), waiting); ok {
		t.Error("a tick that came while the loop worked counted")
	}
}

// TestSameMeta: metadata that differs in any field is not the same (a
// field added to Meta must be compared too); nil and empty lists are.
func TestSameMeta(t *testing.T) {
	t.Parallel()
	base := Meta{Version: MetaVersion, Algorithm: Algorithm, Weight: 1, VIPs: []netip.Addr{netip.MustParseAddr("198.18.0.200")}}
	if !sameMeta(base, base) {
		t.Fatal("metadata not the same as itself")
	}
	empty := base
	empty.Unhealthy, empty.MACs = []netip.Addr{}, []string{}
	if !sameMeta(base, empty) {
		t.Error("nil and empty lists differ")
	}
	mt := reflect.TypeFor[Meta]()
	for i := range mt.NumField() {
		other := base
		f := reflect.ValueOf(&other).Elem().Field(i)
		switch f.Kind() {
		case reflect.Int, reflect.Uint32:
			if f.CanInt() {
				f.SetInt(f.Int() + 7)
			} else {
				f.SetUint(f.Uint() + 7)
			}
		case reflect.String:
			f.SetString(f.String() + "x")
		case reflect.Bool:
			f.SetBool(!f.Bool())
		case reflect.Slice:
			switch f.Type().Elem() {
			case reflect.TypeFor[netip.Addr]():
				f.Set(reflect.ValueOf([]netip.Addr{netip.MustParseAddr("198.18.0.201")}))
			case reflect.TypeFor[string]():
				f.Set(reflect.ValueOf([]string{"02:00:00:00:00:01"}))
			default:
				t.Fatalf("Meta.%s: a list of %s, which this test cannot change", mt.Field(i).Name, f.Type().Elem())
			}
		default:
			t.Fatalf("Meta.%s: a %s, which this test cannot change", mt.Field(i).Name, f.Kind())
		}
		if sameMeta(base, other) {
			t.Errorf("metadata that differs in %s is the same", mt.Field(i).Name)
		}
	}
}

// TestRecheckPaced: a member counted dead is joined again soon (its first
// join within the first gap, at the loop's next look), and then, from this host, at a pace that
// keeps the joins of all hosts together under recheckLoad a second: in a
// cluster of 64, a falsely dead member got 63 push-pulls of the whole state
// every two probe intervals, and the cluster never settled.
func TestRecheckPaced(t *testing.T) {
	t.Parallel()
	for _, n := range []int{3, 16, 64} {
		c := idleCluster(t)
		for i := 4; i <= n; i++ {
			events{c}.NotifyJoin(&memberlist.Node{Name: fmt.Sprintf("h%d", i), Addr: []byte{198, 18, 0, byte(10 + i)}, Port: 7946})
		}
		start := time.Now()
		events{c}.NotifyLeave(&memberlist.Node{Name: "h2", Addr: []byte{198, 18, 0, 12}, Port: 7946})
		c.mu.Lock()
		delete(c.hold, "h2") // counted: not in doubt
		gap := c.recheckGap(false)
		c.mu.Unlock()
		var joins []time.Duration
		for at := time.Duration(0); at < recheckFor+time.Second; at += recheckEvery * c.cfg.ProbeInterval {
			if addrs := c.recheckTargets(start.Add(at)); len(addrs) > 0 {
				if len(addrs) != 1 || addrs[0] != "198.18.0.12:7946" {
					t.Fatalf("%d hosts: rechecks %v, want h2's address", n, addrs)
				}
				joins = append(joins, at)
			}
		}
		// Within the first gap, at the next look (every recheckEvery
		// probe intervals).
		if first := gap + recheckEvery*c.cfg.ProbeInterval; len(joins) == 0 || joins[0] > first {
			t.Fatalf("%d hosts: joins of h2 at %v, want the first within %s", n, joins, first)
		}
		if joins[len(joins)-1] > recheckFor {
			t.Errorf("%d hosts: h2 joined %s after its death, want none after %s", n, joins[len(joins)-1], recheckFor)
		}
		perSecond := float64(len(joins)) * float64(n-1) / recheckFor.Seconds()
		if perSecond > recheckLoad {
			t.Errorf("%d hosts: %d joins of h2 in %s from this host, %.1f a second from all of them, want at most %d", n, len(joins), recheckFor, perSecond, recheckLoad)
		}
		if min := int(recheckFor / (gap + gap/4 + 2*c.cfg.ProbeInterval)); len(joins) < min {
			t.Errorf("%d hosts: %d joins of h2 in %s, want at least %d (one per %s gap)", n, len(joins), recheckFor, min, gap)
		}
	}
}
