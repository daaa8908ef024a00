package daemon

import (
	"bytes"
	"net/netip"
	"slices"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/internal/config"
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
	return propose.New(watched, routerAddrs(d.table), d.log.With("component", "propose"))
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

// proposedRouters is vip's proposals but its configured routers (by
// address, or by the MAC the client table knows for one).
func (d *Daemon) proposedRouters(vip config.VIP) []propose.Proposal {
	return d.propose.Proposed(vip.Address, func(mac [6]byte, addrs []netip.Addr) bool {
		for _, r := range vip.Routers {
			if slices.Contains(addrs, r) {
				return true
			}
			if m, ok := d.table.MAC(vip.Address, r); ok && m == mac {
				return true
			}
		}
		return false
	})
}
