package gossip

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func meta(healthy, unhealthy []netip.Addr) Meta {
	return Meta{Version: MetaVersion, Algorithm: Algorithm, Weight: 1, VIPs: healthy, Unhealthy: unhealthy}
}

func names(cs []Candidate) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func TestViewEligibility(t *testing.T) {
	t.Parallel()
	web, db := testVIP, netip.MustParseAddr("198.18.0.201")
	both := []netip.Addr{web, db}
	draining := meta(both, nil)
	draining.Draining = true
	v := NewView("a", []Member{
		{Name: "c", State: StateAlive, Meta: meta([]netip.Addr{web}, []netip.Addr{db})},
		{Name: "a", State: StateAlive, Meta: meta(nil, both)},
		{Name: "b", State: StateAlive, Meta: meta(both, nil)},
		{Name: "d", State: StateAlive, Meta: draining},
		{Name: "e", State: StateDead, Meta: meta(both, nil)},
		{Name: "f", State: StateAlive, Meta: meta(both, nil), Err: "unknown version"},
	}, 0)
	if diff := cmp.Diff([]string{"b", "c"}, names(v.Eligible(web))); diff != "" {
		t.Errorf("web eligible (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"b"}, names(v.Eligible(db))); diff != "" {
		t.Errorf("db eligible (-want +got):\n%s", diff)
	}
	if v.Fallback(web) || v.Fallback(db) {
		t.Error("fallback with healthy hosts")
	}

	// Nobody healthy: every live, not draining host that serves it answers.
	sick := NewView("a", []Member{
		{Name: "a", State: StateAlive, Meta: meta(nil, both)},
		{Name: "b", State: StateAlive, Meta: meta(nil, []netip.Addr{web})},
		{Name: "d", State: StateAlive, Meta: draining},
	}, 0)
	if diff := cmp.Diff([]string{"a", "b"}, names(sick.Eligible(web))); diff != "" {
		t.Errorf("fallback eligible (-want +got):\n%s", diff)
	}
	if !sick.Fallback(web) {
		t.Error("no fallback when no host is healthy")
	}
}

var testVIP = netip.MustParseAddr("198.18.0.200")

func TestViewQuorum(t *testing.T) {
	t.Parallel()
	var ms []Member
	for _, n := range []string{"a", "b", "c"} {
		ms = append(ms, Member{Name: n, State: StateAlive, Meta: meta([]netip.Addr{testVIP}, nil)})
	}
	// Alone out of an expected three: no quorum, no answers.
	dead := append([]Member(nil), ms...)
	dead[1].State, dead[2].State = StateDead, StateDead
	lonely := NewView("a", dead, 3)
	if lonely.Quorum() || lonely.Serving() {
		t.Error("a host seeing 1 of 3 serves")
	}
	two := append([]Member(nil), ms...)
	two[2].State = StateDead
	if !NewView("a", two, 3).Quorum() {
		t.Error("2 of 3 is a majority")
	}
	if !NewView("a", dead, 0).Quorum() {
		t.Error("no expect: always quorum")
	}
}
