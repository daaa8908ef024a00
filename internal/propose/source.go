package propose

import (
	"iter"
	"log/slog"
	"net/netip"
	"slices"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/internal/config"
)

// Table is what the watcher reads of the client table.
type Table interface {
	All() iter.Seq[arp.Entry] // walks the clients, copying none
	MAC(vip, ip netip.Addr) ([6]byte, bool)
}

// FromConfig is the daemon's Watcher: the VIPs of the config in force (cfg
// returns it, new after each reload) by interface, while
// node.propose_routers is on, and the neighbours' addresses from table.
func FromConfig(cfg func() *config.Config, table Table, log *slog.Logger) *Watcher {
	watched := func() map[string][]netip.Addr {
		c := cfg()
		if !c.Node.ProposeRouters {
			return nil
		}
		out := map[string][]netip.Addr{}
		for _, v := range c.VIPs {
			out[v.Interface] = append(out[v.Interface], v.Address)
		}
		return out
	}
	return New(watched, routerAddrs(table), listedRouter(cfg, table), log)
}

// routerAddrs finds the addresses a neighbour asked for a VIP from, in
// the client table (a router asks for the VIP like any client). It scans
// the table: the counter calls it once a neighbour is proposed, and at
// most once a minute while it finds none.
func routerAddrs(table Table) func(vip netip.Addr, mac [6]byte) []netip.Addr {
	return func(vip netip.Addr, mac [6]byte) []netip.Addr {
		var out []netip.Addr
		for c := range table.All() {
			if c.VIP == vip && c.MAC == mac {
				out = append(out, c.IP)
			}
		}
		slices.SortFunc(out, netip.Addr.Compare)
		// A walk may yield a client twice (arp.ClientTable.All).
		return slices.Compact(out)
	}
}

// listedRouter says whether vip lists a neighbour in its routers already:
// by one of its addresses, or by the MAC the client table knows for a
// listed router.
func listedRouter(cfg func() *config.Config, table Table) func(vip netip.Addr, mac [6]byte, addrs []netip.Addr) bool {
	return func(vip netip.Addr, mac [6]byte, addrs []netip.Addr) bool {
		v, ok := cfg().FindVIP(vip.String())
		if !ok {
			return false
		}
		for _, r := range v.Routers {
			if slices.Contains(addrs, r) {
				return true
			}
			if m, ok := table.MAC(vip, r); ok && m == mac {
				return true
			}
		}
		return false
	}
}
