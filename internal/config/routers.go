package config

import (
	"net/netip"
)

// maxRouters bounds vip.routers: each is a key in the spread program's map
// of routers, for every VIP.
const maxRouters = 16

// vipRouters checks vip.routers of vip #i (where names it in errors): each
// a unicast address of the VIP's family, not the VIP, listed once.
func (c *checker) vipRouters(i int, where string, vip netip.Addr, raw []string) []netip.Addr {
	if len(raw) == 0 {
		return nil
	}
	at := c.line("vip", i, "routers")
	if len(raw) > maxRouters {
		c.errAt(at, "%s: routers: %d addresses, at most %d", where, len(raw), maxRouters)
		return nil
	}
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, s := range raw {
		a, err := netip.ParseAddr(s)
		switch {
		case err != nil:
			c.errAt(at, "%s: routers: %q is not an IP address", where, s)
		case a.Zone() != "" || a.Is4In6():
			c.errAt(at, "%s: routers: %s: write an IPv4 address plainly and an IPv6 one without a zone", where, a)
		case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			c.errAt(at, "%s: routers: %s is not a unicast address", where, a)
		case vip.IsValid() && a.Is4() != vip.Is4():
			c.errAt(at, "%s: routers: %s is not of the VIP's family (%s): a router's IPv%d traffic comes with its own VIP", where, a, vip, map[bool]int{true: 4, false: 6}[a.Is4()])
		case a == vip:
			c.errAt(at, "%s: routers: %s is the VIP itself", where, a)
		case seen[a]:
			c.errAt(at, "%s: routers: %s is listed twice", where, a)
		default:
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}
