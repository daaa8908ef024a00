package spread

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/arpshare/arpshare/internal/config"
)

type macMap map[netip.Addr][6]byte

func (m macMap) MAC(_, ip netip.Addr) ([6]byte, bool) { mac, ok := m[ip]; return mac, ok }

// TestFromConfig: only the VIPs with routers are spread, read from the
// config in force at each call.
func TestFromConfig(t *testing.T) {
	t.Parallel()
	router := netip.MustParseAddr("198.18.0.1")
	cfg := &config.Config{VIPs: []config.VIP{
		{Name: "plain", Address: netip.MustParseAddr("198.18.0.10"), Interface: "eth0"},
		{Name: "routed", Address: netip.MustParseAddr("198.18.0.11"), Interface: "eth1", Routers: []netip.Addr{router}},
	}}
	src := FromConfig(func() *config.Config { return cfg }, macMap{router: {2, 0, 0, 0, 0, 1}})
	want := []RoutedVIP{{VIP: netip.MustParseAddr("198.18.0.11"), Name: "routed", Interface: "eth1", Routers: []netip.Addr{router}}}
	if diff := cmp.Diff(want, src.Routed(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("Routed (-want +got):\n%s", diff)
	}
	if mac, ok := src.MAC(want[0].VIP, router); !ok || mac != [6]byte{2, 0, 0, 0, 0, 1} {
		t.Errorf("MAC(router) = %v, %v", mac, ok)
	}
	cfg = &config.Config{}
	if got := src.Routed(); len(got) != 0 {
		t.Errorf("after a reload without routers, Routed = %v", got)
	}
}
