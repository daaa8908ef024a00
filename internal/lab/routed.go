package lab

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// Routed clients: a router on the segment at RouterIP, forwarding between it
// and a subnet of clients behind it, RoutedNet, on a bridge of its own (br2
// in the switch's namespace), and the same in IPv6 at RouterIP6 and
// RoutedNet6. Every address stays in 198.18.0.0/15 and fd00::/8.
var (
	RouterIP   = netip.MustParseAddr("198.18.0.254")
	RoutedNet  = netip.MustParsePrefix("198.19.1.0/24")
	RouterIP6  = netip.MustParseAddr("fd00::fe")
	RoutedNet6 = netip.MustParsePrefix("fd00:1::/64")
	// routerInside is the router's address on the clients' subnet.
	routerInside  = netip.MustParseAddr("198.19.1.254")
	routerInside6 = netip.MustParseAddr("fd00:1::fe")
	routedIP      = func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 19, 1, byte(1 + i)}) }
	routedIP6     = func(i int) netip.Addr { return netip.AddrFrom16([16]byte{0: 0xfd, 3: 1, 15: byte(1 + i)}) }
)

// Router is a machine that forwards between the segment and the routed
// clients: the hosts see its MAC on every routed client's packets.
type Router struct {
	NS    string
	Addr  netip.Addr // on the segment
	Addr6 netip.Addr // on the segment
	// LinkLocal is its link-local address on the segment: it asks for an
	// IPv6 VIP from it (Linux solicits a neighbour for a packet it
	// forwards from its link-local address), so it is the address to list
	// in an IPv6 VIP's routers.
	LinkLocal netip.Addr
	Clients   []*Client // behind it, with an IPv4 and an IPv6 address
}

// AddRouter adds the router and clients routed clients behind it (at most
// 99), and routes RoutedNet and RoutedNet6 through it from every host
// already added (add the hosts first). Forwarding is enabled in the
// router's namespace only.
func (l *Lab) AddRouter(clients int) (*Router, error) {
	if clients > 99 {
		return nil, fmt.Errorf("lab: at most 99 routed clients")
	}
	r := &Router{NS: "arpshare-" + l.Suffix + "-rt", Addr: RouterIP, Addr6: RouterIP6}
	if err := l.plug(r.NS, "rt", r.Addr, r.Addr6); err != nil {
		return nil, err
	}
	if out, err := exec.Command("ip", "netns", "exec", r.NS, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%s: sysctl: %w: %s", r.NS, err, out)
	}
	steps := [][]string{
		{"-n", l.switchNS, "link", "add", "br2", "type", "bridge"},
		{"-n", l.switchNS, "link", "set", "br2", "up"},
		{"-n", l.switchNS, "link", "add", "rti", "type", "veth", "peer", "name", "eth1", "netns", r.NS},
		{"-n", l.switchNS, "link", "set", "rti", "master", "br2", "up"},
		{"-n", r.NS, "addr", "add", netip.PrefixFrom(routerInside, RoutedNet.Bits()).String(), "dev", "eth1"},
		{"-n", r.NS, "addr", "add", netip.PrefixFrom(routerInside6, RoutedNet6.Bits()).String(), "dev", "eth1", "nodad"},
		{"-n", r.NS, "link", "set", "eth1", "up"},
	}
	if err := ipSteps(steps); err != nil {
		return nil, err
	}
	var err error
	if r.LinkLocal, err = linkLocal(r.NS); err != nil {
		return nil, err
	}
	for i := range clients {
		c := &Client{Name: fmt.Sprintf("r%02d", i+1), Addr: routedIP(i), Addr6: routedIP6(i)}
		c.NS = "arpshare-" + l.Suffix + "-" + c.Name
		if err := l.addNS(c.NS); err != nil {
			return nil, err
		}
		if err := ipSteps([][]string{
			{"-n", l.switchNS, "link", "add", c.Name, "type", "veth", "peer", "name", "eth0", "netns", c.NS},
			{"-n", l.switchNS, "link", "set", c.Name, "master", "br2", "up"},
			{"-n", c.NS, "addr", "add", netip.PrefixFrom(c.Addr, RoutedNet.Bits()).String(), "dev", "eth0"},
			{"-n", c.NS, "addr", "add", netip.PrefixFrom(c.Addr6, RoutedNet6.Bits()).String(), "dev", "eth0", "nodad"},
			{"-n", c.NS, "link", "set", "eth0", "up"},
			{"-n", c.NS, "route", "add", "default", "via", routerInside.String()},
			{"-n", c.NS, "-6", "route", "add", "default", "via", routerInside6.String()},
		}); err != nil {
			return nil, err
		}
		r.Clients = append(r.Clients, c)
	}
	l.mu.Lock()
	hosts := append([]*Host(nil), l.Hosts...)
	l.mu.Unlock()
	for _, h := range hosts {
		if err := r.Route(h); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Route routes RoutedNet and RoutedNet6 through the router from h: a host
// added after the router needs it to answer the routed clients.
func (r *Router) Route(h *Host) error {
	return ipSteps([][]string{
		{"-n", h.NS, "route", "add", RoutedNet.String(), "via", r.Addr.String(), "dev", "eth0"},
		{"-n", h.NS, "-6", "route", "add", RoutedNet6.String(), "via", r.Addr6.String(), "dev", "eth0"},
	})
}

func ipSteps(steps [][]string) error {
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

// linkLocal returns the link-local address of eth0 in namespace ns.
func linkLocal(ns string) (netip.Addr, error) {
	out, err := ipOut("-n", ns, "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link")
	if err != nil {
		return netip.Addr{}, err
	}
	for _, f := range strings.Fields(out) {
		if p, err := netip.ParsePrefix(f); err == nil && p.Addr().IsLinkLocalUnicast() {
			return p.Addr(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%s: eth0 has no link-local address: %q", ns, out)
}

// Spreading returns nil once every host spreads vips VIPs, each with every
// router seen (its MAC learnt) and want hosts in its table, else what is
// missing.
func Spreading(hosts []*Host, vips, want int) error {
	for _, h := range hosts {
		s, err := h.Status()
		if err != nil {
			return err
		}
		sp := s.Spread
		switch {
		case !sp.Active:
			return fmt.Errorf("%s: spreading not active: %s", h.Name, sp.Error)
		case len(sp.VIPs) != vips:
			return fmt.Errorf("%s: spreading %d VIPs, want %d", h.Name, len(sp.VIPs), vips)
		}
		for _, v := range sp.VIPs {
			for ip, mac := range v.Routers {
				if mac == "" {
					return fmt.Errorf("%s: %s: router %s not seen yet", h.Name, v.Name, ip)
				}
			}
			if len(v.Hosts) != want {
				return fmt.Errorf("%s: %s: spread table has hosts %v", h.Name, v.Name, v.Hosts)
			}
		}
	}
	return nil
}
