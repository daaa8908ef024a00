package gossip

import (
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/arpshare/arpshare/internal/clock/clocktest"
)

// startVersioned starts a real memberlist host on loopback whose metadata
// edit changes, as another release would gossip it.
func startVersioned(t *testing.T, name string, bind netip.AddrPort, peers []netip.AddrPort, software string, edit func(*Meta), opts ...func(*ClusterConfig)) *node {
	t.Helper()
	n := &node{done: make(chan struct{}), state: &memState{mine: name}}
	cfg := ClusterConfig{
		Name: name, Bind: bind, Peers: peers, Keys: [][]byte{make([]byte, 32)}, Label: "test",
		ProbeInterval: 200 * time.Millisecond, ProbeTimeout: 100 * time.Millisecond,
		SuspicionMult: 3, GossipInterval: 100 * time.Millisecond, RejoinInterval: time.Second,
		Expect: 3, Software: software,
		Meta: func() Meta {
			m := Meta{Version: MetaVersion, Algorithm: Algorithm, Weight: 1, VIPs: []netip.Addr{netip.MustParseAddr("198.18.0.200")}}
			if edit != nil {
				edit(&m)
			}
			return m
		},
		State:  n.state,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, o := range opts {
		o(&cfg)
	}
	n.c = NewCluster(cfg)
	n.run(t)
	return n
}

// TestProtocolVersions: hosts of this build trust a peer of the previous
// build (version 1, no range gossiped) and of a next release that still
// speaks this build's version; one whose range leaves this build out is
// shown rejected, both ranges named, gets no clients and is not counted
// toward quorum.
func TestProtocolVersions(t *testing.T) {
	t.Parallel()
	lo := netip.MustParseAddr("127.0.0.1")
	var at []netip.AddrPort
	for range 4 {
		at = append(at, netip.AddrPortFrom(lo, freePort(t)))
	}
	vip := netip.MustParseAddr("198.18.0.200")
	cur := startVersioned(t, "current", at[0], at[1:], "0.2.0", nil)
	// The previous release: version 1, without MinVersion nor Software.
	startVersioned(t, "previous", at[1], at[:1], "", func(m *Meta) { m.Version, m.MinVersion, m.Software = 1, 0, "" })
	startVersioned(t, "next", at[2], at[:1], "0.3.0", func(m *Meta) { m.Version, m.MinVersion = MetaVersion+1, MetaVersion })
	startVersioned(t, "future", at[3], at[:1], "0.9.0", func(m *Meta) { m.Version, m.MinVersion = MetaVersion+5, MetaVersion+2 })

	waitView(t, cur, "all four members", func(v *View) bool {
		return len(v.Members) == 4 && v.Alive() == 3 && len(v.Eligible(vip)) == 3
	})
	v := cur.c.View()
	for _, name := range []string{"current", "previous", "next"} {
		if m, _ := v.Member(name); !m.Live() {
			t.Errorf("%s not trusted: %s", name, m.Err)
		}
	}
	f, _ := v.Member("future")
	want := "0.9.0 speaks gossip protocol versions 3 to 6, this build speaks version 1"
	if f.Live() || f.Reason != RejectVersion || !strings.Contains(f.Err, want) {
		t.Errorf("future: live %v, reason %q, error %q; want rejected: %q", f.Live(), f.Reason, f.Err, want)
	}
	if m, _ := v.Member("next"); m.Meta.Software != "0.3.0" || m.Meta.MinVersion != MetaVersion {
		t.Errorf("next: software %q, min version %d", m.Meta.Software, m.Meta.MinVersion)
	}
	if m, _ := v.Member("current"); m.Meta.Software != "0.2.0" || m.Meta.MinVersion != MinMetaVersion {
		t.Errorf("this host gossips software %q, min version %d", m.Meta.Software, m.Meta.MinVersion)
	}
}

// TestSetPeers: a reloaded peer list is joined at once (the clusters'
// clocks stand still here: no periodic re-join ever comes), and quorum
// counts the hosts it names with the reloaded expect; a host removed from
// it stops counting.
func TestSetPeers(t *testing.T) {
	t.Parallel()
	lo := netip.MustParseAddr("127.0.0.1")
	a, b, c := netip.AddrPortFrom(lo, freePort(t)), netip.AddrPortFrom(lo, freePort(t)), netip.AddrPortFrom(lo, freePort(t))
	slow := func(cfg *ClusterConfig) { cfg.Clock = clocktest.New(epoch) }
	expect := func(n int) func(*ClusterConfig) { return func(cfg *ClusterConfig) { cfg.Expect = n } }
	na := startVersioned(t, "a", a, []netip.AddrPort{b}, "", nil, slow, expect(2))
	startVersioned(t, "b", b, []netip.AddrPort{a}, "", nil, slow, expect(2))
	// c names nobody: only a reload of a's peers brings it in.
	startVersioned(t, "c", c, nil, "", nil, slow, expect(1))
	waitView(t, na, "a and b", func(v *View) bool { return v.Alive() == 2 && v.Quorum() })
	if _, ok := na.c.View().Member("c"); ok {
		t.Fatal("c joined before any host named it")
	}

	na.c.SetPeers([]netip.AddrPort{b, c}, 3)
	waitView(t, na, "c joined and counted", func(v *View) bool {
		m, ok := v.Member("c")
		return ok && m.Live() && v.Expect == 3 && v.Alive() == 3 && v.Quorum()
	})
	// Removed from the configuration while still up: a member, not counted.
	na.c.SetPeers([]netip.AddrPort{b}, 2)
	waitView(t, na, "c no longer counted", func(v *View) bool {
		_, ok := v.Member("c")
		return ok && v.Expect == 2 && v.Alive() == 2 && v.Quorum()
	})
}
