package arp

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// NDPConn is one interface's ICMPv6 socket for Neighbor Discovery.
type NDPConn interface {
	ReadRaw(b []byte) (int, *ipv6.ControlMessage, netip.Addr, error)
	WriteTo(m ndp.Message, cm *ipv6.ControlMessage, dst netip.Addr) error
	JoinGroup(group netip.Addr) error
	LeaveGroup(group netip.Addr) error
	Close() error
}

var _ NDPConn = (*ndp.Conn)(nil)

// ListenNDP opens an ICMPv6 socket for the named interface that receives
// only Neighbor Solicitations and Advertisements, and returns it with the
// interface's MAC address. The kernel keeps answering for the host's own addresses; the VIPs live on lo,
// so it never answers for them on this interface.
func ListenNDP(name string) (NDPConn, net.HardwareAddr, error) {
	ifi, err := usable(name)
	if err != nil {
		return nil, nil, err
	}
	// Bound to no address: a socket bound to the link-local address
	// receives only messages to it and to the groups it joined, and would
	// miss the unicast solicitations for a VIP with which clients check
	// that their entry still works (RFC 4861 7.3.1), and the answers to
	// re-pointing solicitations, sent to the VIP. Messages from other
	// interfaces are dropped by interface index (see serve).
	c, _, err := ndp.Listen(ifi, ndp.Unspecified)
	if err != nil {
		return nil, nil, fmt.Errorf("open ICMPv6 socket: %w", err)
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeNeighborSolicitation)
	f.Accept(ipv6.ICMPTypeNeighborAdvertisement)
	if err := c.SetICMPFilter(&f); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("filter ICMPv6: %w", err)
	}
	// The hop limit proves a message was not routed (RFC 4861, 7.1.1).
	if err := c.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagInterface, true); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("ICMPv6 hop limit: %w", err)
	}
	return c, ifi.HardwareAddr, nil
}

// ndpLink is an interface open for NDP.
type ndpLink struct {
	conn  NDPConn
	mac   net.HardwareAddr
	index int // the interface's index, for messages sent from a VIP
	log   *slog.Logger
}

func (l *ndpLink) Close() error { return l.conn.Close() }

// setVIPs joins each VIP's solicited-node multicast group, so that the
// interface receives the solicitations for it, and leaves the old ones. A
// group it cannot join is a VIP whose clients' solicitations may not reach
// this host: it says so.
func (l *ndpLink) setVIPs(old, new []netip.Addr) {
	for _, v := range old {
		if !slices.Contains(new, v) {
			if g, err := ndp.SolicitedNodeMulticast(v); err == nil {
				if err := l.conn.LeaveGroup(g); err != nil {
					l.log.Warn("leave a solicited-node multicast group", "vip_address", v, "group", g, "error", err)
				}
			}
		}
	}
	for _, v := range new {
		if g, err := ndp.SolicitedNodeMulticast(v); err == nil && !slices.Contains(old, v) {
			if err := l.conn.JoinGroup(g); err != nil {
				l.log.Warn("cannot join a VIP's solicited-node multicast group: this host may not hear its clients' neighbor solicitations",
					"vip_address", v, "group", g, "error", err)
			}
		}
	}
}

var allNodes = netip.MustParseAddr("ff02::1")

func (l *ndpLink) serve(h handler) error {
	buf := make([]byte, 1500)
	for {
		n, cm, src, err := l.conn.ReadRaw(buf)
		if err != nil {
			return err
		}
		hops := -1
		if cm != nil {
			if l.index != 0 && cm.IfIndex != 0 && cm.IfIndex != l.index {
				continue // another interface's, for its own responder
			}
			hops = cm.HopLimit
		}
		// The socket names the interface as the zone of every source; the
		// client table and the gossiped wire form key clients without it.
		h.handleNDP(l, buf[:n], hops, src.WithZone(""), time.Now())
	}
}

// handleNDP decides on one message read on l, and answers it on l.
func (r *Responder) handleNDP(l *ndpLink, msg []byte, hops int, src netip.Addr, now time.Time) {
	r.busy.Store(now.UnixNano())
	defer r.busy.Store(0)
	s := r.snap.Load()
	v := r.decideNDP(s, msg, hops, src, [6]byte(l.mac), now)
	r.count(s, v.vip, v.out)
	if k := r.kern.Load(); k != nil && (v.out == Answered || v.out == NotOwner) {
		from, _ := linkLayerOpt(msg[ndpOptionsOff:], optSourceLLA) // vetted by decideNDP
		r.decidedNDP(k, s, v.vip, v, src, from)
		r.flushDecided(k)
	}
	if !v.send {
		return
	}
	m, dst := v.message(s, src, l.mac)
	send := func() error { return l.conn.WriteTo(m, nil, dst) }
	if v.delay > 0 {
		r.sendLater(now.Add(v.delay), s, v.vip, send)
		return
	}
	r.sent(s, v.vip, send())
}

// message returns the advertisement that answers a solicitation from src,
// and where it goes.
func (v ndpVerdict) message(s *snapshot, src netip.Addr, mac net.HardwareAddr) (ndp.Message, netip.Addr) {
	vip := s.vips[v.vip].Address
	if v.answer == answerAllNodes {
		// Every machine hears it, and each has its own owner for the
		// VIP: with Override clear (RFC 4861 7.2.4, as a proxy answers)
		// it tells the prober the address is taken and moves no entry
		// (7.2.5: a different address without Override at most makes a
		// reachable entry stale, and the next probe goes to the owner).
		a := advertise(vip, mac, false)
		a.Override = false
		return a, allNodes
	}
	return advertise(vip, mac, true), src
}

// advertise builds a Neighbor Advertisement of vip at mac, with Override
// set: the point is to replace whatever MAC the receiver has.
func advertise(vip netip.Addr, mac net.HardwareAddr, solicited bool) *ndp.NeighborAdvertisement {
	return &ndp.NeighborAdvertisement{
		Solicited: solicited, Override: true, TargetAddress: vip,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}},
	}
}

// solicit builds a Neighbor Solicitation for client's address that carries
// mac as its source link-layer address.
func solicit(client netip.Addr, mac net.HardwareAddr) *ndp.NeighborSolicitation {
	return &ndp.NeighborSolicitation{
		TargetAddress: client,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}},
	}
}

// repoint solicits the client from the VIP (the VIP is on lo, so the kernel
// takes it as a source), unicast to the client's address.
func (l *ndpLink) repoint(mac net.HardwareAddr, vip netip.Addr, c Client) error {
	cm := &ipv6.ControlMessage{HopLimit: ndp.HopLimit, Src: vip.AsSlice(), IfIndex: l.index}
	return l.conn.WriteTo(solicit(c.IP, mac), cm, c.IP)
}

func (l *ndpLink) announce(mac net.HardwareAddr, vip netip.Addr) error {
	return l.conn.WriteTo(advertise(vip, mac, false), nil, allNodes)
}
