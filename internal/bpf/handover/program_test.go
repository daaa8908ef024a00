package handover

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/arpshare/arpshare/internal/bpf"
	"github.com/arpshare/arpshare/internal/bpf/bpftest"
)

const (
	tcxNext     = -1 // TC_ACT_UNSPEC
	tcxRedirect = 7  // TC_ACT_REDIRECT
)

var (
	// BPF_PROG_TEST_RUN receives on loopback, whose MAC is all zeros: a
	// frame to it is for this host.
	toHost    = [6]byte{}
	broadcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	multicast = [6]byte{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}
)

// segment is a TCP segment in an Ethernet frame.
type segment struct {
	dstMAC, srcMAC [6]byte
	src, dst       netip.AddrPort
	flags, ttl     byte
}

// frame builds the frame, with a correct IPv4 header checksum.
func (s segment) frame() []byte { return s.frameWith(0) }

// frameWith builds the frame with n bytes of data after the TCP header.
func (s segment) frameWith(n int) []byte {
	if s.ttl == 0 {
		s.ttl = 64
	}
	b := make([]byte, 0, 128)
	b = append(b, s.dstMAC[:]...)
	b = append(b, s.srcMAC[:]...)
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], s.src.Port())
	binary.BigEndian.PutUint16(tcp[2:], s.dst.Port())
	tcp[12] = 5 << 4
	tcp[13] = s.flags
	tcp = append(tcp, make([]byte, n)...)
	if s.src.Addr().Is4() {
		b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IP)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(tcp)))
		ip[8], ip[9] = s.ttl, unix.IPPROTO_TCP
		sa, da := s.src.Addr().As4(), s.dst.Addr().As4()
		copy(ip[12:], sa[:])
		copy(ip[16:], da[:])
		var sum uint32
		for i := 0; i < 20; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(ip[i:]))
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
		b = append(b, ip...)
	} else {
		b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IPV6)
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(tcp)))
		ip[6], ip[7] = unix.IPPROTO_TCP, s.ttl
		sa, da := s.src.Addr().As16(), s.dst.Addr().As16()
		copy(ip[8:], sa[:])
		copy(ip[24:], da[:])
		b = append(b, ip...)
	}
	return append(b, tcp...)
}

// tag inserts a VLAN tag (tpid, tci) after the frame's MAC addresses.
func tag(frame []byte, tpid, tci uint16) []byte {
	b := append([]byte{}, frame[:12]...)
	b = binary.BigEndian.AppendUint16(b, tpid)
	b = binary.BigEndian.AppendUint16(b, tci)
	return append(b, frame[12:]...)
}

const (
	flagSYN = 0x02
	flagACK = 0x10
	flagPSH = 0x08
)

// TestProgram runs the kernel program on crafted frames (BPF_PROG_TEST_RUN):
// which are handed over, and how they are rewritten.
func TestProgram(t *testing.T) {
	bpftest.Privileged(t)
	p, err := LoadProgram(0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	// A real connection on loopback: a segment of it is local; a segment
	// to the same listener from another port matches only the listener.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	server := netip.MustParseAddrPort(ln.Addr().String())
	clientEnd := netip.MustParseAddrPort(conn.LocalAddr().String())

	moved := [6]byte{0x02, 0, 0, 0, 0, 0x01}
	other := [6]byte{0x02, 0, 0, 0, 0, 0x02}
	peer := [6]byte{0x02, 0, 0, 0, 0, 0xcc} // another host handing a frame on
	prev := [6]byte{0x02, 0, 0, 0, 0, 0xaa}
	own := [6]byte{0x02, 0, 0, 0, 0, 0xbb}
	vip4 := netip.MustParseAddrPort("198.18.0.200:80")
	vip6 := netip.MustParseAddrPort("[fd00::200]:80")
	cli4 := netip.MustParseAddrPort("198.18.0.101:40000")
	cli6 := netip.MustParseAddrPort("[fd00::101]:40000")
	stranger := netip.MustParseAddrPort("198.18.0.102:40000")
	expired := [6]byte{0x02, 0, 0, 0, 0, 0x03}
	for _, k := range []struct {
		Key
		client netip.Addr
	}{{Key{vip4.Addr(), moved}, cli4.Addr()}, {Key{vip6.Addr(), moved}, cli6.Addr()}, {Key{server.Addr(), moved}, netip.Addr{}}} {
		if err := p.Put(k.Key, Entry{Client: k.client, Prev: prev, Own: own, Deadline: bpf.Monotonic() + time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Put(Key{vip4.Addr(), expired}, Entry{Prev: prev, Own: own, Deadline: bpf.Monotonic() - time.Second}); err != nil {
		t.Fatal(err)
	}
	// Entries no daemon writes (it refuses such MACs from gossip): the
	// program must not send to a group or zero address all the same.
	badPrev := map[string][6]byte{"broadcast": broadcast, "multicast": multicast, "zero": {}}
	badClient := map[string][6]byte{}
	for i, name := range []string{"broadcast", "multicast", "zero", "own multicast"} {
		badClient[name] = [6]byte{0x02, 0, 0, 0, 1, byte(i)}
		e := Entry{Prev: badPrev[name], Own: own, Deadline: bpf.Monotonic() + time.Minute}
		if name == "own multicast" {
			e.Prev, e.Own = prev, multicast
		}
		if err := p.Put(Key{vip4.Addr(), badClient[name]}, e); err != nil {
			t.Fatal(err)
		}
	}

	for _, tc := range []struct {
		name string
		in   segment
		want int
	}{
		{"IPv4 ACK of a moved client, no socket", segment{toHost, moved, cli4, vip4, flagACK | flagPSH, 64}, tcxRedirect},
		{"IPv6 ACK of a moved client, no socket", segment{toHost, moved, cli6, vip6, flagACK, 64}, tcxRedirect},
		{"handed on by another host, found by IP", segment{toHost, peer, cli4, vip4, flagACK, 63}, tcxRedirect},
		{"IPv6, handed on by another host", segment{toHost, peer, cli6, vip6, flagACK, 63}, tcxRedirect},
		{"from the previous owner: not back", segment{toHost, prev, cli4, vip4, flagACK, 63}, tcxNext},
		{"TTL spent", segment{toHost, moved, cli4, vip4, flagACK, 1}, tcxNext},
		{"SYN of a moved client", segment{toHost, moved, cli4, vip4, flagSYN, 64}, tcxNext},
		{"IPv6 SYN of a moved client", segment{toHost, moved, cli6, vip6, flagSYN, 64}, tcxNext},
		{"client that did not move", segment{toHost, other, stranger, vip4, flagACK, 64}, tcxNext},
		{"entry past its deadline", segment{toHost, expired, stranger, vip4, flagACK, 64}, tcxNext},
		{"segment of an established socket here", segment{toHost, moved, clientEnd, server, flagACK, 64}, tcxNext},
		{"segment only a listener matches", segment{toHost, moved, netip.AddrPortFrom(clientEnd.Addr(), 1), server, flagACK, 64}, tcxRedirect},
		{"to another host's MAC (promiscuous)", segment{other, moved, cli4, vip4, flagACK, 64}, tcxNext},
		{"IPv6 to another host's MAC", segment{other, moved, cli6, vip6, flagACK, 64}, tcxNext},
		{"to the broadcast MAC", segment{broadcast, moved, cli4, vip4, flagACK, 64}, tcxNext},
		{"to a multicast MAC", segment{multicast, moved, cli4, vip4, flagACK, 64}, tcxNext},
		{"previous owner's MAC is broadcast", segment{toHost, badClient["broadcast"], stranger, vip4, flagACK, 64}, tcxNext},
		{"previous owner's MAC is multicast", segment{toHost, badClient["multicast"], stranger, vip4, flagACK, 64}, tcxNext},
		{"previous owner's MAC is zero", segment{toHost, badClient["zero"], stranger, vip4, flagACK, 64}, tcxNext},
		{"own MAC is multicast", segment{toHost, badClient["own multicast"], stranger, vip4, flagACK, 64}, tcxNext},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in.frame()
			out := make([]byte, len(in))
			ret, err := p.objs.Handover.Run(&ebpf.RunOptions{Data: in, DataOut: out})
			if err != nil {
				t.Fatal(err)
			}
			if int32(ret) != int32(tc.want) {
				t.Errorf("program returned %d, want %d", int32(ret), tc.want)
			}
			want := in
			if tc.want == tcxRedirect {
				// To the previous owner, from here, one hop less.
				s := tc.in
				s.dstMAC, s.srcMAC, s.ttl = prev, own, s.ttl-1
				want = s.frame()
			}
			if d := cmp.Diff(want, out); d != "" {
				t.Errorf("frame out (-want +got):\n%s", d)
			}
		})
	}
	u, err := p.Usage(Key{vip4.Addr(), moved}, Entry{Client: cli4.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	if u.Packets != 2 || u.Last == 0 {
		t.Errorf("usage of the IPv4 entry = %+v, want 2 packets (by MAC and by IP) and a time", u)
	}
	o, err := p.Outcomes()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(map[string]uint64{"handed": 5, "local": 1, "syn": 2, "expired": 1, "loop": 2, "bad_mac": 4}, o); d != "" {
		t.Errorf("outcomes (-want +got):\n%s", d)
	}
}

// TestProgramReceived runs the program attached to a veth in a namespace of
// its own, on frames the kernel received, which BPF_PROG_TEST_RUN cannot
// make: VLAN-tagged ones (the kernel takes the outer tag out of the frame
// before tc) and one whose headers are not in the skb's linear part.
func TestProgramReceived(t *testing.T) {
	bpftest.Privileged(t)
	v := bpftest.NewVeth(t)
	p, err := LoadProgram(0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := v.Do(func() error { return p.Attach(v.In) }); err != nil {
		t.Fatal(err)
	}
	moved := [6]byte{0x02, 0, 0, 0, 0, 0x01}
	prev := [6]byte{0x02, 0, 0, 0, 0, 0xaa}
	own := [6]byte{0x02, 0, 0, 0, 0, 0xbb}
	vip, vip6 := netip.MustParseAddrPort("198.18.0.200:80"), netip.MustParseAddrPort("[fd00::200]:80")
	cli, cli6 := netip.MustParseAddrPort("198.18.0.101:40000"), netip.MustParseAddrPort("[fd00::101]:40000")
	for _, e := range []struct{ vip, cli netip.AddrPort }{{vip, cli}, {vip6, cli6}} {
		if err := p.Put(Key{e.vip.Addr(), moved}, Entry{Client: e.cli.Addr(), Prev: prev, Own: own, Deadline: bpf.Monotonic() + time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	seg, seg6 := segment{v.InMAC, moved, cli, vip, flagACK, 64}, segment{v.InMAC, moved, cli6, vip6, flagACK, 64}
	handedOver, handedOver6 := segment{prev, own, cli, vip, flagACK, 63}, segment{prev, own, cli6, vip6, flagACK, 63}
	handed := func() uint64 {
		o, err := p.Outcomes()
		if err != nil {
			t.Fatal(err)
		}
		return o["handed"]
	}
	for _, tc := range []struct {
		name string
		in   []byte
		out  []byte // as handed over; nil: not handed
	}{
		{"untagged", seg.frame(), handedOver.frame()},
		// A packet socket sends a frame of more than a page with only
		// its Ethernet header in the linear part.
		{"headers beyond a short linear part", seg.frameWith(4200), handedOver.frameWith(4200)},
		{"IPv6 headers beyond a short linear part", seg6.frameWith(4200), handedOver6.frameWith(4200)},
		{"tagged for VLAN 100", tag(seg.frame(), 0x8100, 100), nil},
		{"802.1ad-tagged for VLAN 100", tag(seg.frame(), 0x88a8, 100), nil},
		{"two tags (QinQ)", tag(tag(seg.frame(), 0x8100, 200), 0x88a8, 100), nil},
		// This interface's frame with a priority: the handed-over frame
		// keeps it.
		{"priority tag only (VLAN 0)", tag(seg.frame(), 0x8100, 5<<13), tag(handedOver.frame(), 0x8100, 5<<13)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := handed()
			v.Run(t, p.objs.Handover, tc.in)
			if got, want := handed()-before, map[bool]uint64{true: 1}[tc.out != nil]; got != want {
				t.Errorf("handed over %d times, want %d", got, want)
			}
			if tc.out == nil {
				return
			}
			out := v.Receive(5*time.Second, func(f []byte) bool { return [6]byte(f[:6]) == prev })
			if d := cmp.Diff(tc.out, out); d != "" {
				t.Errorf("frame handed over (-want +got):\n%s", d)
			}
		})
	}
}

// BenchmarkProgram measures the program's cost per TCP segment in the
// kernel (BPF_PROG_TEST_RUN): for a client that did not move (one map
// lookup), and for a moved client's segment that is handed over (two
// lookups, a socket lookup, the rewrite).
func BenchmarkProgram(b *testing.B) {
	if !bpftest.CanLoad() {
		b.Skip("loading a BPF program needs CAP_BPF (or root with its capabilities)")
	}
	p, err := LoadProgram(0)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	moved := [6]byte{0x02, 0, 0, 0, 0, 0x01}
	vip := netip.MustParseAddrPort("198.18.0.200:80")
	cli := netip.MustParseAddrPort("198.18.0.101:40000")
	if err := p.Put(Key{vip.Addr(), moved}, Entry{Client: cli.Addr(), Prev: [6]byte{2, 0, 0, 0, 0, 0xaa}, Own: [6]byte{2, 0, 0, 0, 0, 0xbb}, Deadline: bpf.Monotonic() + time.Hour}); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		from [6]byte
		want int32
		src  netip.AddrPort
	}{{"not moved", [6]byte{2, 0, 0, 0, 0, 0x02}, tcxNext, netip.MustParseAddrPort("198.18.0.102:40000")}, {"handed over", moved, tcxRedirect, cli}} {
		b.Run(bc.name, func(b *testing.B) {
			in := segment{toHost, bc.from, bc.src, vip, flagACK, 64}.frame()
			// One run per call: a handed-over frame is rewritten in
			// place, and repeats in the kernel would run on the result.
			var d time.Duration
			for range b.N {
				ret, run, err := p.objs.Handover.Benchmark(in, 1, nil)
				if err != nil {
					b.Fatal(err)
				}
				if int32(ret) != bc.want {
					b.Fatalf("program returned %d, want %d", int32(ret), bc.want)
				}
				d += run
			}
			d /= time.Duration(b.N)
			b.ReportMetric(float64(d.Nanoseconds()), "ns/segment")
		})
	}
}
