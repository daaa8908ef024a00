package arp

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"

	"github.com/arpshare/arpshare/arp/arptest"
)

// The decisions on received messages must never panic, whatever arrives.

func FuzzHandle(f *testing.F) {
	for _, p := range []struct {
		op       arp.Operation
		mac      net.HardwareAddr
		from, to netip.Addr
	}{{arp.OperationRequest, clientMAC, mine, vip}, {arp.OperationReply, peerMAC, vip, vip}, {arp.OperationRequest, clientMAC, theirs, vip}} {
		b, err := frameFor(p.op, p.mac, p.from, zeroMAC, p.to, clientMAC)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(withSHA(append([]byte(nil), b...), broadcast[:]))
	}
	f.Add([]byte{})
	table := NewClientTable(100, time.Hour)
	r := NewResponder(ResponderConfig{Interface: "eth0", VIPs: hashVIPs, Table: table, View: view, Logger: quietLogger()})
	reply := make([]byte, arpFrameLen)
	f.Fuzz(func(t *testing.T, frame []byte) {
		v := r.decideARP(r.snap.Load(), frame, [6]byte(myMAC), time.Unix(100, 0))
		if v.send && v.out != Answered {
			t.Fatalf("a reply for outcome %s", v.out)
		}
		if v.send {
			arpReply(reply, frame, [6]byte(myMAC))
			if !UnicastMAC(reply[:6]) || !UnicastMAC(reply[offTHA:offTHA+6]) {
				t.Fatalf("a reply to %x (target %x)", reply[:6], reply[offTHA:offTHA+6])
			}
		}
		onlyUnicast(t, table)
	})
}

// onlyUnicast fails t if the table holds a client that is not one
// machine's: re-pointing would send to the whole segment.
func onlyUnicast(t *testing.T, table *ClientTable) {
	t.Helper()
	for _, c := range table.Clients() {
		if !UnicastMAC(c.MAC) || !unicastIP(c.IP) {
			t.Fatalf("learned %s at %s", c.IP, c.MAC)
		}
	}
}

func FuzzHandleNDP(f *testing.F) {
	ns, _ := ndp.MarshalMessage(&ndp.NeighborSolicitation{TargetAddress: vip6,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: clientMAC}}})
	bns, _ := ndp.MarshalMessage(&ndp.NeighborSolicitation{TargetAddress: vip6,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: net.HardwareAddr(broadcast[:])}}})
	na, _ := ndp.MarshalMessage(advertise(vip6, peerMAC, false))
	confirm, _ := ndp.MarshalMessage(&ndp.NeighborAdvertisement{Solicited: true, TargetAddress: mine6,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: net.HardwareAddr(broadcast[:])}}})
	f.Add(ns, 255, mine6.AsSlice())
	f.Add(bns, 255, mine6.AsSlice())
	f.Add(ns, 255, netip.IPv6Unspecified().AsSlice())
	f.Add(na, 255, theirs6.AsSlice())
	f.Add(confirm, 255, mine6.AsSlice())
	f.Add([]byte{135}, 64, []byte{})
	table := NewClientTable(100, time.Hour)
	table.Learn(vip6, mine6, clientMAC, time.Unix(50, 0))
	r := NewResponder(ResponderConfig{Interface: "eth0", IPv6: true, VIPs: hashVIPs6, Table: table, View: view, Logger: quietLogger()})
	f.Fuzz(func(t *testing.T, msg []byte, hops int, src []byte) {
		from, _ := netip.AddrFromSlice(src)
		s := r.snap.Load()
		v := r.decideNDP(s, msg, hops, from, [6]byte(myMAC), time.Unix(100, 0))
		if v.send && v.out != Answered {
			t.Fatalf("an answer for outcome %s", v.out)
		}
		if v.send {
			m, dst := v.message(s, from, myMAC)
			a := m.(*ndp.NeighborAdvertisement)
			switch {
			case dst == allNodes && a.Override:
				t.Fatal("an answer to all nodes with Override set")
			case dst != allNodes && !unicastIP(dst):
				t.Fatalf("an answer to %s", dst)
			}
		}
		onlyUnicast(t, table)
	})
}

// FuzzRepoint: whatever a client's MAC, re-pointing sends to one machine
// or not at all.
func FuzzRepoint(f *testing.F) {
	f.Add([]byte(clientMAC), mine.AsSlice())
	f.Add(broadcast[:], mine.AsSlice())
	f.Add([]byte{1, 0, 0x5e, 0, 0, 1}, []byte{224, 0, 0, 1})
	f.Fuzz(func(t *testing.T, mac, addr []byte) {
		ip, ok := netip.AddrFromSlice(addr)
		if !ok {
			return
		}
		conn := arptest.NewConn()
		r := NewResponder(ResponderConfig{Interface: "eth0", VIPs: hashVIPs, Table: NewClientTable(10, time.Hour), View: view, Logger: quietLogger()})
		r.link, r.mac = &arpLink{conn: conn, mac: myMAC, reply: make([]byte, arpFrameLen)}, myMAC
		err := r.Repoint(vip, Client{VIP: vip, IP: ip.Unmap(), MAC: mac})
		for _, dst := range conn.WrittenTo() {
			if !UnicastMAC(dst) {
				t.Fatalf("re-pointed %s at %x: sent to %s", ip, mac, dst)
			}
		}
		if !UnicastMAC(mac) && !errors.Is(err, ErrNotUnicast) {
			t.Fatalf("re-pointing %x: %v, want ErrNotUnicast", mac, err)
		}
	})
}

func FuzzMerge(f *testing.F) {
	t := NewClientTable(10, time.Hour)
	t.Learn(vip, mine, clientMAC, time.UnixMilli(1000))
	b := t.Encode(time.Now(), time.Time{})
	f.Add(b)
	f.Add(append(append([]byte(nil), b[:len(b)-10]...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		table := NewClientTable(10, time.Hour)
		table.Merge(b, time.UnixMilli(5000))
		onlyUnicast(t, table)
		if n, p := table.Len(), table.Stats().Protected; n > table.Max() || p > table.maxProtected() {
			t.Fatalf("%d clients, %d protected: more than the table holds", n, p)
		}
	})
}
