package arp

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/ndp"

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
	if view.Answers(vip6, gossip.ModeHash, netip.IPv6Unspecified()) {
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
				if a.TargetAddress != vip6 || !a.Override || a.Solicited != tt.solicited || targetMAC(a).String() != myMAC.String() {
					t.Errorf("answer %+v, want an override advertisement of %s at %s (solicited %v)", a, vip6, myMAC, tt.solicited)
				}
			}
			if learned := table.Len() == 1; learned != tt.wantLearn {
				t.Errorf("learned = %v, want %v", learned, tt.wantLearn)
			}
		})
	}
}
