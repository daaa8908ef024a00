package arp

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
)

var (
	vip6    = netip.MustParseAddr("fd00::200")
	mine6   = netip.MustParseAddr("fd00::101")
	theirs6 = netip.MustParseAddr("fd00::102")
)

type fakeOwnership6 struct{}

func (fakeOwnership6) Answer(v, c netip.Addr) (bool, time.Duration) {
	return v == vip6 && (c == mine6 || c.IsUnspecified()), 0
}
func (fakeOwnership6) IsPeer(m net.HardwareAddr) bool { return m.String() == peerMAC.String() }

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
		{"duplicate address detection", ns(vip6, nil), 255, netip.IPv6Unspecified(), Answered, allNodes, false, false},
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
			r := NewResponder(ResponderConfig{Interface: "eth0", IPv6: true, VIPs: []netip.Addr{vip6}, Table: table, Ownership: fakeOwnership6{}, Logger: quietLogger()})
			got, _, reply, dst, _ := r.handleNDP(tt.msg, tt.hops, tt.src, myMAC, time.Unix(100, 0))
			if got != tt.want {
				t.Errorf("outcome = %q, want %q", got, tt.want)
			}
			if (reply != nil) != tt.wantDst.IsValid() || dst != tt.wantDst {
				t.Fatalf("answer %v to %v, want one to %v", reply, dst, tt.wantDst)
			}
			if reply != nil {
				a := reply.(*ndp.NeighborAdvertisement)
				if a.TargetAddress != vip6 || !a.Override || a.Solicited != tt.solicited || linkLayer(a.Options, ndp.Target).String() != myMAC.String() {
					t.Errorf("answer %+v, want an override advertisement of %s at %s (solicited %v)", a, vip6, myMAC, tt.solicited)
				}
			}
			if learned := table.Len() == 1; learned != tt.wantLearn {
				t.Errorf("learned = %v, want %v", learned, tt.wantLearn)
			}
		})
	}
}
