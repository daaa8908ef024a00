package fastpath

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"

	"github.com/arpshare/arpshare/internal/bpf"
	"github.com/arpshare/arpshare/internal/bpf/bpftest"
)

// ndpFrame is an ICMPv6 NDP message (m, checksummed by x/net/icmp unless
// badSum) in an IPv6 packet with hop limit hops, in an Ethernet frame.
func ndpFrame(t testing.TB, dst, src [6]byte, ipSrc, ipDst netip.Addr, hops uint8, m ndp.Message, badSum bool) []byte {
	t.Helper()
	raw, err := ndp.MarshalMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	msg := icmp.Message{Type: ipv6.ICMPType(raw[0]), Code: int(raw[1]), Body: &icmp.RawBody{Data: raw[4:]}}
	body, err := msg.Marshal(icmp.IPv6PseudoHeader(ipSrc.AsSlice(), ipDst.AsSlice()))
	if err != nil {
		t.Fatal(err)
	}
	if badSum {
		body[2] ^= 0x40
	}
	b := append(append(append([]byte{}, dst[:]...), src[:]...), 0x86, 0xdd)
	b = append(b, 0x60, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	b = append(b, 58, hops)
	b = append(append(b, ipSrc.AsSlice()...), ipDst.AsSlice()...)
	return append(b, body...)
}

func solicitation(target netip.Addr, sender [6]byte) *ndp.NeighborSolicitation {
	return &ndp.NeighborSolicitation{TargetAddress: target,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: net.HardwareAddr(sender[:])}}}
}

// solicitedNode returns the solicited-node group of a and its Ethernet
// group.
func solicitedNode(t testing.TB, a netip.Addr) (netip.Addr, [6]byte) {
	g, err := ndp.SolicitedNodeMulticast(a)
	if err != nil {
		t.Fatal(err)
	}
	b := g.As16()
	return g, [6]byte{0x33, 0x33, b[12], b[13], b[14], b[15]}
}

// checkAdvertisement fails unless frame is the advertisement of vip at own
// to client (at clientMAC), as the daemon sends it: solicited, override,
// hop limit 255, a checksum that x/net/icmp computes the same.
func checkAdvertisement(t *testing.T, frame []byte, own, clientMAC [6]byte, vip, client netip.Addr) {
	t.Helper()
	if len(frame) != 86 {
		t.Fatalf("advertisement of %d bytes, want 86", len(frame))
	}
	if [6]byte(frame[0:6]) != clientMAC || [6]byte(frame[6:12]) != own || binary.BigEndian.Uint16(frame[12:14]) != 0x86dd {
		t.Errorf("Ethernet header % x", frame[:14])
	}
	ip := frame[14:54]
	src, dst := netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
	if ip[0]>>4 != 6 || binary.BigEndian.Uint16(ip[4:6]) != 32 || ip[6] != 58 || ip[7] != 255 || src != vip || dst != client {
		t.Errorf("IPv6 header % x: from %s to %s", ip, src, dst)
	}
	body := frame[54:]
	parsed, err := icmp.ParseMessage(58, body)
	if err != nil {
		t.Fatal(err)
	}
	again, err := parsed.Marshal(icmp.IPv6PseudoHeader(src.AsSlice(), dst.AsSlice()))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(again, body); d != "" {
		t.Errorf("ICMPv6 checksum: x/net/icmp makes % x, the program % x", again[2:4], body[2:4])
	}
	m, err := ndp.ParseMessage(body)
	if err != nil {
		t.Fatal(err)
	}
	want := &ndp.NeighborAdvertisement{Solicited: true, Override: true, TargetAddress: vip,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: net.HardwareAddr(own[:])}}}
	if d := cmp.Diff(want, m, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("advertisement (-want +got):\n%s", d)
	}
}

// TestNDPProgram runs the NDP program on crafted frames
// (BPF_PROG_TEST_RUN): which solicitations it answers, which it drops as
// another host's, which it passes on, and what it counts and reports.
func TestNDPProgram(t *testing.T) {
	bpftest.Privileged(t)
	p, err := LoadNDP(0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	own := [6]byte{0x02, 0, 0, 0, 0, 0xbb}
	mine := [6]byte{0x02, 0, 0, 0, 0, 0x01}
	theirs := [6]byte{0x02, 0, 0, 0, 0, 0x02}
	stranger := [6]byte{0x02, 0, 0, 0, 0, 0x03}
	vip := netip.MustParseAddr("fd00::200")
	ipMine := netip.MustParseAddr("fd00::101")
	ipTheirs := netip.MustParseAddr("fe80::102")
	ipStranger := netip.MustParseAddr("fd00::103")
	group, groupMAC := solicitedNode(t, vip)
	otherGroup, otherGroupMAC := solicitedNode(t, netip.MustParseAddr("fd00::1:300"))
	if err := p.objs.Iface.Put(uint32(0), fastpathBPFIfaceState{Mac: own}); err != nil {
		t.Fatal(err)
	}
	if err := p.Replace([]Decision{
		{VIP: vip, Client: ipMine, MAC: mine, Answer: true, Slot: 2},
		{VIP: vip, Client: ipTheirs, MAC: theirs, Answer: false, Slot: 2},
		// An IPv4 decision is the ARP program's: not written here.
		{VIP: netip.MustParseAddr("198.18.0.200"), Client: netip.MustParseAddr("198.18.0.101"), MAC: mine, Answer: true},
	}); err != nil {
		t.Fatal(err)
	}
	if n, err := p.Len(); err != nil || n != 2 {
		t.Fatalf("%d decisions (%v), want 2", n, err)
	}
	run := func(t *testing.T, in []byte) (int32, []byte) {
		t.Helper()
		out := make([]byte, len(in))
		ret, err := p.objs.NdpFastpath.Run(&ebpf.RunOptions{Data: in, DataOut: out})
		if err != nil {
			t.Fatal(err)
		}
		return int32(ret), out
	}
	ns := func(ethDst, sender [6]byte, src, dst netip.Addr) []byte {
		return ndpFrame(t, ethDst, sender, src, dst, 255, solicitation(vip, sender), false)
	}
	if ret, _ := run(t, ns(groupMAC, mine, ipMine, group)); ret != tcxNext {
		t.Fatalf("not serving: program returned %d, want %d (to user space)", ret, tcxNext)
	}
	if err := p.SetServing(true); err != nil {
		t.Fatal(err)
	}

	dad := ndpFrame(t, groupMAC, stranger, netip.IPv6Unspecified(), group, 255, &ndp.NeighborSolicitation{TargetAddress: vip}, false)
	noOption := ndpFrame(t, toHost, mine, ipMine, vip, 255, &ndp.NeighborSolicitation{TargetAddress: vip}, false)
	udp := ns(groupMAC, mine, ipMine, group)
	udp[20] = 17
	for _, tc := range []struct {
		name   string
		in     []byte
		want   int32
		answer bool
	}{
		{"to the VIP's group from a client this host answers", ns(groupMAC, mine, ipMine, group), tcxRedirect, true},
		{"to the VIP from it (a reachability check)", ns(toHost, mine, ipMine, vip), tcxRedirect, true},
		{"another host's client", ns(groupMAC, theirs, ipTheirs, group), tcxShot, false},
		{"unknown client", ns(groupMAC, stranger, ipStranger, group), tcxNext, false},
		{"known client from a new MAC", ns(groupMAC, stranger, ipMine, group), tcxNext, false},
		{"bad checksum", ndpFrame(t, groupMAC, mine, ipMine, group, 255, solicitation(vip, mine), true), tcxNext, false},
		{"routed (hop limit 64)", ndpFrame(t, groupMAC, mine, ipMine, group, 64, solicitation(vip, mine), false), tcxNext, false},
		{"duplicate address detection", dad, tcxNext, false},
		{"no source link-layer option", noOption, tcxNext, false},
		{"option MAC not the Ethernet source", ndpFrame(t, groupMAC, stranger, ipMine, group, 255, solicitation(vip, mine), false), tcxNext, false},
		{"multicast sender MAC", ndpFrame(t, groupMAC, [6]byte{0x33, 0x33, 0, 0, 0, 1}, ipMine, group, 255, solicitation(vip, [6]byte{0x33, 0x33, 0, 0, 0, 1}), false), tcxNext, false},
		{"another address's group", ns(otherGroupMAC, mine, ipMine, otherGroup), tcxNext, false},
		{"the VIP's group on another Ethernet group", ns(otherGroupMAC, mine, ipMine, group), tcxNext, false},
		{"unicast to another host (promiscuous)", ns(stranger, mine, ipMine, vip), tcxNext, false},
		{"multicast source address", ns(groupMAC, mine, netip.MustParseAddr("ff02::1"), group), tcxNext, false},
		{"truncated", ns(groupMAC, mine, ipMine, group)[:80], tcxNext, false},
		{"not ICMPv6", udp, tcxNext, false},
		{"an advertisement", ndpFrame(t, own, mine, ipMine, vip, 255, &ndp.NeighborAdvertisement{TargetAddress: ipMine}, false), tcxNext, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ret, out := run(t, tc.in)
			if ret != tc.want {
				t.Errorf("program returned %d, want %d", ret, tc.want)
			}
			if tc.answer {
				checkAdvertisement(t, out, own, mine, vip, ipMine)
			} else if d := cmp.Diff(tc.in, out); d != "" {
				t.Errorf("frame changed (-in +out):\n%s", d)
			}
		})
	}

	if a, n, err := p.Counts(2); err != nil || a != 2 || n != 1 {
		t.Errorf("slot 2: answered %d, not owner %d (%v); want 2, 1", a, n, err)
	}
	punts, err := p.Punts()
	if err != nil {
		t.Fatal(err)
	}
	// "not ICMPv6" and the advertisement are not counted: the program
	// leaves other traffic alone without a word.
	if d := cmp.Diff(map[string]uint64{"not_serving": 1, "unknown": 1, "mac_changed": 1, "other": 8, "bad_sender": 2, "vlan": 0, "bad_checksum": 1}, punts); d != "" {
		t.Errorf("punts (-want +got):\n%s", d)
	}

	var got []Seen
	if err := p.DrainSeen(func(s Seen) { got = append(got, s) }); err != nil {
		t.Fatal(err)
	}
	now := bpf.Monotonic()
	want := map[netip.Addr]bool{ipMine: true, ipTheirs: false} // client: a request to the VIP itself
	if len(got) != len(want) {
		t.Errorf("reported %+v, want %v", got, want)
	}
	for _, s := range got {
		direct, ok := want[s.Client]
		if !ok || s.VIP != vip || s.Last <= 0 || now-s.Last > time.Minute || (s.Direct != 0) != direct {
			t.Errorf("reported %+v (now %v)", s, now)
		}
	}
}

// TestNDPProgramReceived runs the NDP program attached to a veth, on
// solicitations the kernel received: one is answered through the
// interface, one tagged for a VLAN is passed on.
func TestNDPProgramReceived(t *testing.T) {
	bpftest.Privileged(t)
	v := bpftest.NewVeth(t)
	p, err := LoadNDP(0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	own := [6]byte{0x02, 0, 0, 0, 0, 0xbb}
	mine := [6]byte{0x02, 0, 0, 0, 0, 0x01}
	vip, client := netip.MustParseAddr("fd00::200"), netip.MustParseAddr("fd00::101")
	if err := v.Do(func() error { return p.Attach(v.In, own) }); err != nil {
		t.Fatal(err)
	}
	if err := p.Replace([]Decision{{VIP: vip, Client: client, MAC: mine, Answer: true, Slot: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := p.SetServing(true); err != nil {
		t.Fatal(err)
	}
	group, groupMAC := solicitedNode(t, vip)
	req := ndpFrame(t, groupMAC, mine, client, group, 255, solicitation(vip, mine), false)

	v.Run(t, p.objs.NdpFastpath, tag(req, 0x8100, 100))
	if punts, err := p.Punts(); err != nil || punts["vlan"] != 1 {
		t.Errorf("tagged for VLAN 100: punts %v (%v), want one as a VLAN's", punts, err)
	}
	v.Run(t, p.objs.NdpFastpath, req)
	out := v.Receive(5*time.Second, func(f []byte) bool { return [6]byte(f[:6]) == mine })
	checkAdvertisement(t, out, own, mine, vip, client)
	if a, _, err := p.Counts(1); err != nil || a != 1 {
		t.Errorf("answered %d (%v), want 1", a, err)
	}
}

// BenchmarkNDPProgram measures the NDP program's cost per solicitation in
// the kernel (BPF_PROG_TEST_RUN), answered and left to another host.
func BenchmarkNDPProgram(b *testing.B) {
	bpftest.Privileged(b)
	p, err := LoadNDP(0)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	own := [6]byte{0x02, 0, 0, 0, 0, 0xbb}
	mine := [6]byte{0x02, 0, 0, 0, 0, 0x01}
	vip, client := netip.MustParseAddr("fd00::200"), netip.MustParseAddr("fd00::101")
	if err := p.objs.Iface.Put(uint32(0), fastpathBPFIfaceState{Mac: own, Serving: 1}); err != nil {
		b.Fatal(err)
	}
	group, groupMAC := solicitedNode(b, vip)
	in := ndpFrame(b, groupMAC, mine, client, group, 255, solicitation(vip, mine), false)
	for _, answer := range []bool{true, false} {
		if err := p.Put([]Decision{{VIP: vip, Client: client, MAC: mine, Answer: answer}}); err != nil {
			b.Fatal(err)
		}
		b.Run(map[bool]string{true: "answered", false: "not_owner"}[answer], func(b *testing.B) {
			_, d, err := p.objs.NdpFastpath.Benchmark(in, b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(d.Nanoseconds()), "kernel-ns/op")
		})
	}
}
