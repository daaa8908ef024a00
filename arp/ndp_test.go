package arp

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"

	"github.com/arpshare/arpshare/arp/arptest"
	"github.com/arpshare/arpshare/gossip"
)

func targetMAC(a *ndp.NeighborAdvertisement) net.HardwareAddr {
	for _, o := range a.Options {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
			return lla.Addr
		}
	}
	return nil
}

var vip6 = netip.MustParseAddr("fd00::200")

func marshal(t *testing.T, m ndp.Message) []byte {
	t.Helper()
	b, err := ndp.MarshalMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHandleNDP(t *testing.T) {
	t.Parallel()
	ns := func(target netip.Addr, from net.HardwareAddr) []byte {
		m := &ndp.NeighborSolicitation{TargetAddress: target}
		if from != nil {
			m.Options = []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: from}}
		}
		return marshal(t, m)
	}
	na := func(target netip.Addr, mac net.HardwareAddr) []byte {
		return marshal(t, advertise(target, mac, false))
	}
	dad, dadDst := NotOwner, netip.Addr{}
	if hashPolicy.Answers(view, vip6, netip.IPv6Unspecified()) {
		dad, dadDst = Answered, allNodes
	}
	tests := []struct {
		name      string
		msg       []byte
		hops      int
		src       netip.Addr
		want      Outcome
		wantDst   netip.Addr // of the answer; invalid: none
		solicited bool
		wantLearn bool
	}{
		{"owned client", ns(vip6, clientMAC), 255, mine6, Answered, mine6, true, true},
		{"other host's client", ns(vip6, clientMAC), 255, theirs6, NotOwner, netip.Addr{}, false, true},
		{"reachability check without MAC", ns(vip6, nil), 255, mine6, Answered, mine6, true, false},
		{"duplicate address detection", ns(vip6, nil), 255, netip.IPv6Unspecified(), dad, dadDst, false, false},
		{"duplicate address detection with a source link-layer option", ns(vip6, clientMAC), 255, netip.IPv6Unspecified(), Malformed, netip.Addr{}, false, false},
		{"broadcast source link-layer option", ns(vip6, net.HardwareAddr(broadcast[:])), 255, mine6, BadSenderMAC, netip.Addr{}, false, false},
		{"multicast source link-layer option", ns(vip6, net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}), 255, mine6, BadSenderMAC, netip.Addr{}, false, false},
		{"zero source link-layer option", ns(vip6, zeroMAC), 255, mine6, BadSenderMAC, netip.Addr{}, false, false},
		{"multicast source address", ns(vip6, clientMAC), 255, netip.MustParseAddr("ff02::1"), BadSenderIP, netip.Addr{}, false, false},
		{"loopback source address", ns(vip6, clientMAC), 255, netip.IPv6Loopback(), BadSenderIP, netip.Addr{}, false, false},
		{"broadcast target link-layer option", na(vip6, net.HardwareAddr(broadcast[:])), 255, theirs6, BadSenderMAC, netip.Addr{}, false, false},
		{"foreign target", ns(netip.MustParseAddr("fd00::1"), clientMAC), 255, mine6, Foreign, netip.Addr{}, false, false},
		{"routed (hop limit 64)", ns(vip6, clientMAC), 64, mine6, Malformed, netip.Addr{}, false, false},
		{"garbage", []byte{135, 0, 0}, 255, mine6, Malformed, netip.Addr{}, false, false},
		{"stranger advertises the VIP", na(vip6, clientMAC), 255, theirs6, Conflict, netip.Addr{}, false, false},
		{"peer advertises the VIP", na(vip6, peerMAC), 255, theirs6, PeerAnnounce, netip.Addr{}, false, false},
		{"advertisement of another address", na(theirs6, clientMAC), 255, theirs6, Reply, netip.Addr{}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			table := NewClientTable(10, time.Hour)
			r := NewResponder(ResponderConfig{Interface: "eth0", IPv6: true, VIPs: hashVIPs6, Table: table, View: view, Logger: quietLogger()})
			s := r.snap.Load()
			v := r.decideNDP(s, tt.msg, tt.hops, tt.src, [6]byte(myMAC), time.Unix(100, 0))
			if v.out != tt.want {
				t.Errorf("outcome = %q, want %q", v.out, tt.want)
			}
			if v.send != tt.wantDst.IsValid() {
				t.Fatalf("send = %v, want an answer to %v", v.send, tt.wantDst)
			}
			if v.send {
				reply, dst := v.message(s, tt.src, myMAC)
				if dst != tt.wantDst {
					t.Errorf("answer to %v, want to %v", dst, tt.wantDst)
				}
				a := reply.(*ndp.NeighborAdvertisement)
				// Only a solicited answer overrides: an answer to all
				// nodes must move nobody's entry.
				if a.TargetAddress != vip6 || a.Override != tt.solicited || a.Solicited != tt.solicited || targetMAC(a).String() != myMAC.String() {
					t.Errorf("answer %+v, want an advertisement of %s at %s (solicited and override %v)", a, vip6, myMAC, tt.solicited)
				}
			}
			if learned := table.Len() == 1; learned != tt.wantLearn {
				t.Errorf("learned = %v, want %v", learned, tt.wantLearn)
			}
		})
	}
}

// TestDADAnswer: a duplicate address detection solicitation for the VIP is
// answered by the owner of :: (here the only host), to all nodes, with
// Override and Solicited clear (RFC 4861 7.2.4), so that no machine's
// entry for the VIP moves; nothing is learned.
func TestDADAnswer(t *testing.T) {
	t.Parallel()
	alone := gossip.NewView("me", []gossip.Member{view.Members[0]}, 0)
	table := NewClientTable(10, time.Hour)
	r := NewResponder(ResponderConfig{Interface: "eth0", IPv6: true, VIPs: hashVIPs6, Table: table, View: alone, Logger: quietLogger()})
	s := r.snap.Load()
	msg := marshal(t, &ndp.NeighborSolicitation{TargetAddress: vip6})
	v := r.decideNDP(s, msg, 255, netip.IPv6Unspecified(), [6]byte(myMAC), time.Unix(100, 0))
	if v.out != Answered || !v.send {
		t.Fatalf("outcome %q, send %v; want answered", v.out, v.send)
	}
	m, dst := v.message(s, netip.IPv6Unspecified(), myMAC)
	a := m.(*ndp.NeighborAdvertisement)
	if dst != allNodes || a.Override || a.Solicited || a.TargetAddress != vip6 || targetMAC(a).String() != myMAC.String() {
		t.Errorf("answer %+v to %s, want %s at %s to %s, Override and Solicited clear", a, dst, vip6, myMAC, allNodes)
	}
	if table.Len() != 0 {
		t.Errorf("learned %d clients from a DAD probe", table.Len())
	}
}

// sentNDP records the messages written to an NDPConn.
type sentNDP struct {
	NDPConn
	msgs []ndp.Message
	cms  []*ipv6.ControlMessage
	dsts []netip.Addr
}

func (s *sentNDP) WriteTo(m ndp.Message, cm *ipv6.ControlMessage, dst netip.Addr) error {
	s.msgs, s.cms, s.dsts = append(s.msgs, m), append(s.cms, cm), append(s.dsts, dst)
	return nil
}

// TestRepointPackets: re-pointing sends a request addressed to the client
// from the VIP, with this host's MAC, in both families.
func TestRepointPackets(t *testing.T) {
	t.Parallel()
	conn := arptest.NewConn()
	if err := (&arpLink{conn: conn, mac: myMAC}).repoint(myMAC, vip, Client{IP: theirs, MAC: clientMAC}); err != nil {
		t.Fatal(err)
	}
	var f ethernet.Frame
	var p arp.Packet
	if err := f.UnmarshalBinary(conn.Written()[0]); err != nil {
		t.Fatal(err)
	}
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		t.Fatal(err)
	}
	if f.Destination.String() != clientMAC.String() || f.Source.String() != myMAC.String() ||
		p.Operation != arp.OperationRequest || p.SenderHardwareAddr.String() != myMAC.String() || p.SenderIP != vip || p.TargetIP != theirs {
		t.Errorf("ARP re-point: %s -> %s, %+v; want who-has %s tell %s from %s to %s", f.Source, f.Destination, p, theirs, vip, myMAC, clientMAC)
	}

	s := &sentNDP{}
	if err := (&ndpLink{conn: s, mac: myMAC, index: 7}).repoint(myMAC, vip6, Client{IP: theirs6, MAC: clientMAC}); err != nil {
		t.Fatal(err)
	}
	ns, ok := s.msgs[0].(*ndp.NeighborSolicitation)
	if !ok || ns.TargetAddress != theirs6 || len(ns.Options) != 1 || ns.Options[0].(*ndp.LinkLayerAddress).Direction != ndp.Source ||
		ns.Options[0].(*ndp.LinkLayerAddress).Addr.String() != myMAC.String() {
		t.Fatalf("NDP re-point: %+v, want a solicitation for %s with source link-layer %s", s.msgs[0], theirs6, myMAC)
	}
	if cm := s.cms[0]; cm == nil || !net.IP(cm.Src).Equal(vip6.AsSlice()) || cm.HopLimit != 255 || cm.IfIndex != 7 || s.dsts[0] != theirs6 {
		t.Errorf("NDP re-point sent with %+v to %s, want from %s, hop limit 255, interface 7, to %s", cm, s.dsts[0], vip6, theirs6)
	}
}

// TestNDPAnswerConfirms: a client's solicited advertisement of its own
// address (its answer to a re-pointing solicitation) refreshes and protects
// it in the table, with or without a target link-layer option (Linux omits it when
// answering a unicast solicitation); a stranger's teaches nothing.
func TestNDPAnswerConfirms(t *testing.T) {
	t.Parallel()
	for _, withMAC := range []bool{true, false} {
		table := NewClientTable(10, time.Hour)
		table.Learn(vip6, mine6, clientMAC, time.Unix(100, 0))
		table.Asked(vip6, mine6, time.Unix(199, 0)) // this host's re-pointing solicitation
		r := NewResponder(ResponderConfig{Interface: "eth0", IPv6: true, VIPs: hashVIPs6, Table: table, View: view, Logger: quietLogger()})
		na := &ndp.NeighborAdvertisement{Solicited: true, TargetAddress: mine6}
		if withMAC {
			na.Options = []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: clientMAC}}
		}
		stranger := &ndp.NeighborAdvertisement{Solicited: true, TargetAddress: theirs6}
		for _, m := range []*ndp.NeighborAdvertisement{na, stranger} {
			if v := r.decideNDP(r.snap.Load(), marshal(t, m), 255, m.TargetAddress, [6]byte(myMAC), time.Unix(200, 0)); v.out != Reply {
				t.Errorf("outcome %q, want %q", v.out, Reply)
			}
		}
		if c, _ := table.Get(vip6, mine6); !c.LastSeen.Equal(time.Unix(200, 0)) || c.MAC.String() != clientMAC.String() {
			t.Errorf("with MAC %v: client %+v, want seen at 200 with %s", withMAC, c, clientMAC)
		}
		if table.Len() != 1 {
			t.Errorf("with MAC %v: %d clients, want the one known", withMAC, table.Len())
		}
		if !table.Protected(vip6, mine6) {
			t.Errorf("with MAC %v: the client that answered this host's solicitation is not protected", withMAC)
		}
	}
}
