package daemon

import (
	"bytes"
	"net/netip"
	"slices"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/internal/propose"
)

// newProposer watches for routers with node.propose_routers: the VIPs of
// the config in force, by interface.
func newProposer(d *Daemon) *propose.Watcher {
	watched := func() map[string][]netip.Addr {
		cfg := d.config()
		if !cfg.Node.ProposeRouters {
			return nil
		}
		out := map[string][]netip.Addr{}
		for _, v := range cfg.VIPs {
			out[v.Interface] = append(out[v.Interface], v.Address)
		}
		return out
	}
	return propose.New(watched, routerAddrs(d.table), listedRouter(d), d.log.With("component", "propose"))
}

// routerAddrs finds the addresses a neighbour asked for a VIP from, in
// the client table (a router asks for the VIP like any client). It scans
// the table: the counter calls it once a neighbour is proposed, and at
// most once a minute while it finds none.
func routerAddrs(table *arp.ClientTable) func(vip netip.Addr, mac [6]byte) []netip.Addr {
	return func(vip netip.Addr, mac [6]byte) []netip.Addr {
		var out []netip.Addr
		for _, c := range table.Clients() {
			if c.VIP == vip && bytes.Equal(c.MAC, mac[:]) {
				out = append(out, c.IP)
			}
		}
		slices.SortFunc(out, netip.Addr.Compare)
		return out
	}
}

// listedRouter says whether vip lists a neighbour in its routers already:
// by one of its addresses, or by the MAC the client table knows for a
// listed router.
func listedRouter(d *Daemon) func(vip netip.Addr, mac [6]byte, addrs []netip.Addr) bool {
	return func(vip netip.Addr, mac [6]byte, addrs []netip.Addr) bool {
		v, ok := d.config().FindVIP(vip.String())
		if !ok {
			return false
		}
		for _, r := range v.Routers {
			if slices.Contains(addrs, r) {
				return true
			}
			if m, ok := d.table.MAC(vip, r); ok && m == mac {
				return true
			}
		}
		return false
	}
}
