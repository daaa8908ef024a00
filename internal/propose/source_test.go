package propose

import (
	"iter"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/internal/config"
)

type fakeTable []arp.Client

func (t fakeTable) All() iter.Seq[arp.Entry] {
	return func(yield func(arp.Entry) bool) {
		for _, c := range t {
			if !yield(arp.Entry{VIP: c.VIP, IP: c.IP, MAC: [6]byte(c.MAC)}) {
				return
			}
		}
	}
}

func (t fakeTable) MAC(vip, ip netip.Addr) ([6]byte, bool) {
	for _, c := range t {
		if c.VIP == vip && c.IP == ip {
			return [6]byte(c.MAC), true
		}
	}
	return [6]byte{}, false
}

// TestFromConfig: the watched VIPs follow the config in force and its
// switch; a neighbour's addresses come from the client table, and a
// neighbour is listed when the VIP names one of its addresses, or a router
// whose MAC is its.
func TestFromConfig(t *testing.T) {
	vip, other := netip.MustParseAddr("198.18.0.200"), netip.MustParseAddr("198.18.0.201")
	router, listed := netip.MustParseAddr("198.18.0.254"), netip.MustParseAddr("198.18.0.253")
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 0xfe}
	table := fakeTable{
		{VIP: vip, IP: router, MAC: mac},
		{VIP: vip, IP: listed, MAC: mac},
		{VIP: other, IP: router, MAC: mac},
		{VIP: vip, IP: netip.MustParseAddr("198.18.0.10"), MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}},
	}
	cfg := &config.Config{VIPs: []config.VIP{
		{Name: "web", Address: vip, Interface: "eth0"},
		{Name: "db", Address: other, Interface: "eth1"},
	}}
	w := FromConfig(func() *config.Config { return cfg }, table, nil)
	if got := w.watched(); got != nil {
		t.Errorf("propose_routers off: watched %v, want nothing", got)
	}
	cfg.Node.ProposeRouters = true
	if got := w.watched(); len(got) != 2 || !slices.Equal(got["eth0"], []netip.Addr{vip}) || !slices.Equal(got["eth1"], []netip.Addr{other}) {
		t.Errorf("watched %v, want web on eth0 and db on eth1", got)
	}

	addrs := routerAddrs(table)(vip, [6]byte(mac))
	if want := []netip.Addr{listed, router}; !slices.Equal(addrs, want) {
		t.Errorf("addresses of the router for web: %v, want %v", addrs, want)
	}
	isListed := listedRouter(func() *config.Config { return cfg }, table)
	if isListed(vip, [6]byte(mac), addrs) {
		t.Error("listed for web, whose routers are empty")
	}
	cfg.VIPs[0].Routers = []netip.Addr{listed}
	if !isListed(vip, [6]byte(mac), []netip.Addr{router}) {
		t.Error("not listed for web, whose routers name its other address (the table's MAC)")
	}
	if !isListed(vip, [6]byte(mac), addrs) {
		t.Error("not listed for web, whose routers name one of its addresses")
	}
	if isListed(other, [6]byte(mac), addrs) {
		t.Error("listed for db, whose routers are empty")
	}
}
