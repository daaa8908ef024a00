package config

import (
	"net/netip"
	"strings"
	"testing"
)

// TestGossipWarnings: each likely mistake in a valid [gossip] section gets
// its warning, and a finished one none.
func TestGossipWarnings(t *testing.T) {
	t.Parallel()
	h1, h2, h3 := netip.MustParseAddrPort("198.18.0.11:7946"), netip.MustParseAddrPort("198.18.0.12:7946"), netip.MustParseAddrPort("198.18.0.13:7946")
	tests := []struct {
		name string
		g    GossipConfig
		want []string // the start of each warning, in order
	}{
		{"finished", GossipConfig{Bind: h1, Peers: []netip.AddrPort{h1, h2, h3}, Expect: 3}, nil},
		{"expect unset", GossipConfig{Bind: h1, Peers: []netip.AddrPort{h2}}, []string{"gossip.expect is not set"}},
		{"no peers", GossipConfig{Bind: h1, Expect: 1}, []string{"gossip.peers names no host but this one"}},
		{"only itself", GossipConfig{Bind: h1, Peers: []netip.AddrPort{h1}, Expect: 1}, []string{"gossip.peers names no host but this one"}},
		{"expect above the hosts named", GossipConfig{Bind: h1, Peers: []netip.AddrPort{h1, h2}, Expect: 3},
			[]string{"gossip.expect = 3 is more than the 2 hosts"}},
		{"everything", GossipConfig{Bind: h1}, []string{"gossip.expect is not set", "gossip.peers names no host but this one"}},
	}
	for _, tt := range tests {
		got := gossipWarnings(tt.g)
		if len(got) != len(tt.want) {
			t.Errorf("%s: warnings %q, want %d", tt.name, got, len(tt.want))
			continue
		}
		for i, w := range tt.want {
			if !strings.HasPrefix(got[i], w) {
				t.Errorf("%s: warning %d is %q, want it to start %q", tt.name, i, got[i], w)
			}
		}
	}
}
