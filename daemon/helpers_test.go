package daemon

import (
	"io"
	"log/slog"
	"net/netip"

	"github.com/arpshare/arpshare/gossip"
)

var testVIP = netip.MustParseAddr("198.18.0.200")

func view(self string, live ...string) *gossip.View {
	var ms []gossip.Member
	for _, n := range live {
		ms = append(ms, gossip.Member{Name: n, State: gossip.StateAlive,
			Meta: gossip.Meta{Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: 1, VIPs: []netip.Addr{testVIP}}})
	}
	return gossip.NewView(self, ms, 0)
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
