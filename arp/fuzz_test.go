package arp

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
)

// The decisions on received messages must never panic, whatever arrives.

func FuzzHandle(f *testing.F) {
	for _, p := range []struct {
		op       arp.Operation
		mac      net.HardwareAddr
		from, to netip.Addr
	}{{arp.OperationRequest, clientMAC, mine, vip}, {arp.OperationReply, peerMAC, vip, vip}} {
		b, err := frameFor(p.op, p.mac, p.from, zeroMAC, p.to, clientMAC)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	r := NewResponder(ResponderConfig{Interface: "eth0", VIPs: hashVIPs, Table: NewClientTable(100, time.Hour), View: view, Logger: quietLogger()})
	reply := make([]byte, arpFrameLen)
	f.Fuzz(func(t *testing.T, frame []byte) {
		v := r.decideARP(r.snap.Load(), frame, [6]byte(myMAC), time.Unix(100, 0))
		if v.send && v.out != Answered {
			t.Fatalf("a reply for outcome %s", v.out)
		}
		if v.send {
			arpReply(reply, frame, [6]byte(myMAC))
		}
	})
}

func FuzzHandleNDP(f *testing.F) {
	ns, _ := ndp.MarshalMessage(&ndp.NeighborSolicitation{TargetAddress: vip6,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: clientMAC}}})
	na, _ := ndp.MarshalMessage(advertise(vip6, peerMAC, false))
	f.Add(ns, 255, mine6.AsSlice())
	f.Add(na, 255, theirs6.AsSlice())
	f.Add([]byte{135}, 64, []byte{})
	r := NewResponder(ResponderConfig{Interface: "eth0", IPv6: true, VIPs: hashVIPs6, Table: NewClientTable(100, time.Hour), View: view, Logger: quietLogger()})
	f.Fuzz(func(t *testing.T, msg []byte, hops int, src []byte) {
		from, _ := netip.AddrFromSlice(src)
		s := r.snap.Load()
		v := r.decideNDP(s, msg, hops, from, [6]byte(myMAC), time.Unix(100, 0))
		if v.send && v.out != Answered {
			t.Fatalf("an answer for outcome %s", v.out)
		}
		if v.send {
			v.message(s, from, myMAC)
		}
	})
}

func FuzzMerge(f *testing.F) {
	t := NewClientTable(10, time.Hour)
	t.Learn(vip, mine, clientMAC, time.UnixMilli(1000))
	b, _ := t.MarshalBinary()
	f.Add(b)
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(_ *testing.T, b []byte) {
		NewClientTable(10, time.Hour).Merge(b, time.UnixMilli(5000))
	})
}
