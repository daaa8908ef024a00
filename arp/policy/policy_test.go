package policy

import (
	"net/netip"
	"testing"

	"github.com/arpshare/arpshare/gossip"
)

// view is the cluster as self sees it, with live hosts serving testVIP;
// expect 3.
func view(self string, live ...string) *gossip.View {
	var ms []gossip.Member
	for _, n := range live {
		ms = append(ms, gossip.Member{Name: n, State: gossip.StateAlive, Meta: gossip.Meta{
			Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: 1, VIPs: []netip.Addr{testVIP}}})
	}
	return gossip.NewView(self, ms, 3)
}

var three = []string{"a", "b", "c"}

func TestParse(t *testing.T) {
	t.Parallel()
	for _, m := range []Mode{Hash, Race, Single} {
		p, err := Parse(string(m))
		if err != nil || p.Mode() != m {
			t.Errorf("Parse(%q) = %v, %v", m, p, err)
		}
	}
	if _, err := Parse("roundrobin"); err == nil || err.Error() != `mode "roundrobin": want hash, race or single` {
		t.Errorf("Parse(roundrobin): %v", err)
	}
	if Of("").Mode() != Hash {
		t.Error("the default mode is not hash")
	}
}

// TestAnswers: hash shares the clients out, single gives them all to one
// host, race lets every host answer after a delay, and a host that does not
// serve (no quorum) answers nobody in any mode.
func TestAnswers(t *testing.T) {
	t.Parallel()
	hash, single, race := Of(Hash), Of(Single), Of(Race)
	one := single.Owner(view("a", three...), testVIP, netip.Addr{})
	answered := map[netip.Addr]int{}
	for _, self := range three {
		v := view(self, three...)
		mine := 0
		for _, c := range clients(300) {
			if hash.Answers(v, testVIP, c) {
				mine++
				answered[c]++
				if hash.Owner(v, testVIP, c) != self {
					t.Fatalf("%s answers %s but shows %s as its owner", self, c, hash.Owner(v, testVIP, c))
				}
			}
			if got := single.Answers(v, testVIP, c); got != (self == one) {
				t.Fatalf("%s: single answers %s: %v, owner is %s", self, c, got, one)
			}
			if !race.Answers(v, testVIP, c) {
				t.Fatalf("%s: race does not answer %s", self, c)
			}
		}
		if mine < 50 || mine > 150 {
			t.Errorf("%s answers %d of 300 clients in hash mode", self, mine)
		}
	}
	for c, n := range answered {
		if n != 1 {
			t.Fatalf("client %s answered by %d hosts in hash mode", c, n)
		}
	}
	lonely := view("a", "a") // 1 of an expected 3
	for _, p := range []Policy{hash, single, race} {
		if p.Answers(lonely, testVIP, clients(1)[0]) || p.Holds(lonely, testVIP, clients(1)[0]) || p.Announces(lonely, testVIP) {
			t.Errorf("%s: a host without quorum answers", p.Mode())
		}
	}
	for _, p := range []Policy{hash, single} {
		if p.Delay() != 0 || !p.Exclusive() {
			t.Errorf("%s: delay %v, exclusive %v", p.Mode(), p.Delay(), p.Exclusive())
		}
	}
	if race.Exclusive() {
		t.Error("race is exclusive")
	}
	for range 100 {
		if d := race.Delay(); d < 0 || d >= raceJitter {
			t.Fatalf("race delay %v", d)
		}
	}
}

// TestMoved: when c dies, each of its clients is moved by exactly one
// survivor (its new owner), and no other client moves; in race mode nobody
// knows whom a client picked, so every client is moved by one survivor.
func TestMoved(t *testing.T) {
	t.Parallel()
	for _, m := range []Mode{Hash, Race, Single} {
		p := Of(m)
		movers := map[netip.Addr]int{}
		for _, self := range []string{"a", "b"} {
			before, after := view(self, three...), view(self, "a", "b")
			for _, c := range clients(300) {
				if p.Moved(before, after, testVIP, c) {
					movers[c]++
					if was := p.Owner(before, testVIP, c); was != "c" && p.Exclusive() {
						t.Fatalf("%s: %s moves %s, whose owner %s did not die", m, self, c, was)
					}
				}
				if p.Moved(before, before, testVIP, c) {
					t.Fatalf("%s: %s moves %s with no change", m, self, c)
				}
			}
		}
		for _, c := range clients(300) {
			lost := p.Owner(view("a", three...), testVIP, c) == "c" || !p.Exclusive()
			if lost != (movers[c] == 1) {
				t.Fatalf("%s: client %s (owner lost: %v) moved by %d hosts", m, c, lost, movers[c])
			}
		}
	}
	// A host joining moves nothing in race mode: every host answers.
	if Of(Race).Moved(view("a", "a", "b"), view("a", three...), testVIP, clients(1)[0]) {
		t.Error("race: a join moves a client")
	}
}

// TestHoldsAndAnnounces: a host re-asserts the clients it answers alone,
// and only the single-mode owner announces the VIP.
func TestHoldsAndAnnounces(t *testing.T) {
	t.Parallel()
	for _, self := range three {
		v := view(self, three...)
		for _, c := range clients(50) {
			if Of(Hash).Holds(v, testVIP, c) != Of(Hash).Answers(v, testVIP, c) {
				t.Fatalf("hash: %s holds %s but does not answer it, or the reverse", self, c)
			}
			if Of(Race).Holds(v, testVIP, c) {
				t.Fatalf("race: %s holds %s", self, c)
			}
			if Of(Race).Claims(v, testVIP, c) != (Of(Race).Owner(v, testVIP, c) == self) {
				t.Fatalf("race: %s claims %s without owning it", self, c)
			}
		}
		owner := Of(Single).Owner(v, testVIP, netip.Addr{}) == self
		if Of(Single).Announces(v, testVIP) != owner || Of(Hash).Announces(v, testVIP) || Of(Race).Announces(v, testVIP) {
			t.Errorf("%s: announces wrong (single owner: %v)", self, owner)
		}
	}
}

func TestOwnerWithout(t *testing.T) {
	t.Parallel()
	v := view("a", three...)
	for _, c := range clients(100) {
		if got, want := Of(Hash).OwnerWithout(v, testVIP, c, "b"), Of(Hash).Owner(view("a", "a", "c"), testVIP, c); got != want {
			t.Fatalf("owner of %s without b: %s, want %s", c, got, want)
		}
	}
}
