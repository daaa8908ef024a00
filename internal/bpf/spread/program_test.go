package spread

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
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
	router    = [6]byte{0x02, 0, 0, 0, 0, 0xfe}
	stranger  = [6]byte{0x02, 0, 0, 0, 0, 0x99}
	peer      = [6]byte{0x02, 0, 0, 0, 0, 0x12}
	vip4      = netip.MustParseAddr("198.18.0.200")
	vip6      = netip.MustParseAddr("fd00::200")
	cli4      = netip.MustParseAddr("198.19.1.1")
	cli6      = netip.MustParseAddr("fd00:1::1")
)

// packet is an IP packet in an Ethernet frame.
type packet struct {
	dstMAC, srcMAC [6]byte
	src, dst       netip.Addr
	proto          uint8
	sport, dport   uint16
	fragment       bool // IPv4: a later fragment (offset 185); IPv6: a fragment header
	l4             int  // transport bytes; 0: 20
}

func (p packet) frame() []byte { return p.frameWith(flagACK, 64) }

const (
	flagSYN = 0x02
	flagACK = 0x10
)

// frameWith builds the frame with these TCP flags and TTL (hop limit).
func (p packet) frameWith(flags, ttl byte) []byte {
	l4 := p.l4
	if l4 == 0 {
		l4 = 20
	}
	body := make([]byte, l4)
	if l4 >= 4 && !p.fragment {
		binary.BigEndian.PutUint16(body[0:], p.sport)
		binary.BigEndian.PutUint16(body[2:], p.dport)
	}
	if l4 >= 14 && p.proto == unix.IPPROTO_TCP && !p.fragment {
		body[12], body[13] = 5<<4, flags
	}
	b := append(append([]byte{}, p.dstMAC[:]...), p.srcMAC[:]...)
	if p.src.Is4() {
		b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IP)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(body)))
		if p.fragment {
			binary.BigEndian.PutUint16(ip[6:], 185)
		}
		ip[8], ip[9] = ttl, p.proto
		s, d := p.src.As4(), p.dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		var sum uint32
		for i := 0; i < 20; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(ip[i:]))
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
		return append(append(b, ip...), body...)
	}
	b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IPV6)
	ip := make([]byte, 40)
	ip[0] = 0x60
	next := p.proto
	if p.fragment {
		next = 44
		body = append([]byte{p.proto, 0, 0, 1, 0, 0, 0, 7}, body...)
	}
	binary.BigEndian.PutUint16(ip[4:], uint16(len(body)))
	ip[6], ip[7] = next, ttl
	s, d := p.src.As16(), p.dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	return append(append(b, ip...), body...)
}

func load(t testing.TB) *Program {
	t.Helper()
	bpftest.Privileged(t)
	p, err := LoadProgram(4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// uniform is a table whose every slot is mac's.
func uniform(mac [6]byte, local bool) []Slot {
	t := make([]Slot, Slots)
	for i := range t {
		t[i] = Slot{MAC: mac, Local: local}
	}
	return t
}

func run(t testing.TB, p *Program, in []byte) (int32, []byte) {
	t.Helper()
	out := make([]byte, len(in))
	ret, err := p.objs.Spread.Run(&ebpf.RunOptions{Data: in, DataOut: out})
	if err != nil {
		t.Fatal(err)
	}
	return int32(ret), out
}

// TestProgram runs the kernel program on crafted frames: which are sent to
// another host, how they are rewritten, and what each outcome counts.
func TestProgram(t *testing.T) {
	p := load(t)
	for _, vip := range []netip.Addr{vip4, vip6} {
		if err := p.SetTable(vip, uniform(peer, false)); err != nil {
			t.Fatal(err)
		}
		if err := p.SetRouters(vip, [][6]byte{router}); err != nil {
			t.Fatal(err)
		}
	}
	otherVIP := netip.MustParseAddr("198.18.0.201")
	tcp4 := packet{toHost, router, cli4, vip4, unix.IPPROTO_TCP, 40000, 80, false, 0}
	tcp6 := packet{toHost, router, cli6, vip6, unix.IPPROTO_TCP, 40000, 80, false, 0}
	with := func(p packet, f func(*packet)) packet { f(&p); return p }
	for _, tc := range []struct {
		name    string
		in      packet
		want    int32
		outcome string
	}{
		{"IPv4 TCP from the router", tcp4, tcxRedirect, "spread"},
		{"IPv6 TCP from the router", tcp6, tcxRedirect, "spread"},
		{"UDP", with(tcp4, func(p *packet) { p.proto = unix.IPPROTO_UDP }), tcxRedirect, "spread"},
		{"ICMP", with(tcp4, func(p *packet) { p.proto = unix.IPPROTO_ICMP }), tcxRedirect, "spread"},
		{"IPv4 fragment", with(tcp4, func(p *packet) { p.fragment = true }), tcxRedirect, "spread"},
		{"IPv6 fragment", with(tcp6, func(p *packet) { p.fragment = true }), tcxRedirect, "spread"},
		{"from a client on the segment", with(tcp4, func(p *packet) { p.srcMAC = stranger }), tcxNext, "not_router"},
		{"IPv6 from a client on the segment", with(tcp6, func(p *packet) { p.srcMAC = stranger }), tcxNext, "not_router"},
		{"to a VIP without routers", with(tcp4, func(p *packet) { p.dst = otherVIP }), tcxNext, ""},
		{"to another host's MAC (promiscuous)", with(tcp4, func(p *packet) { p.dstMAC = stranger }), tcxNext, ""},
		{"to the broadcast MAC", with(tcp4, func(p *packet) { p.dstMAC = broadcast }), tcxNext, ""},
		{"TCP header cut short", with(tcp4, func(p *packet) { p.l4 = 2 }), tcxNext, "bad_packet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := p.Outcomes()
			in := tc.in.frame()
			ret, out := run(t, p, in)
			if ret != tc.want {
				t.Errorf("program returned %d, want %d", ret, tc.want)
			}
			want := in
			if tc.want == tcxRedirect {
				// To the peer, from the MAC the router sent it to.
				want = append(append(append([]byte{}, peer[:]...), in[:6]...), in[12:]...)
			}
			if !bytes.Equal(out, want) {
				t.Errorf("frame out\n%x\nwant\n%x", out, want)
			}
			after, _ := p.Outcomes()
			for name, n := range after {
				wantN := before[name]
				if name == tc.outcome {
					wantN++
				}
				if n != wantN {
					t.Errorf("outcome %s counted %d, want %d", name, n-before[name], wantN-before[name])
				}
			}
		})
	}
}

// TestProgramTables checks the tables' states: this host's slots pass, an
// empty table passes, a group MAC is never a destination, and a router
// taken away is no longer spread.
func TestProgramTables(t *testing.T) {
	p := load(t)
	if err := p.SetRouters(vip4, [][6]byte{router, stranger}); err != nil {
		t.Fatal(err)
	}
	in := packet{toHost, router, cli4, vip4, unix.IPPROTO_TCP, 40000, 80, false, 0}.frame()
	for _, tc := range []struct {
		name    string
		table   []Slot
		routers [][6]byte
		want    int32
		outcome string
	}{
		{"this host's slots", uniform(peer, true), nil, tcxNext, "local"},
		{"nobody eligible", nil, nil, tcxNext, "no_table"},
		{"a broadcast MAC", uniform(broadcast, false), nil, tcxNext, "bad_mac"},
		{"a zero MAC", uniform([6]byte{}, false), nil, tcxNext, "bad_mac"},
		{"a peer's slots", uniform(peer, false), nil, tcxRedirect, "spread"},
		{"the router taken away", uniform(peer, false), [][6]byte{stranger}, tcxNext, "not_router"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := p.SetTable(vip4, tc.table); err != nil {
				t.Fatal(err)
			}
			if tc.routers != nil {
				if err := p.SetRouters(vip4, tc.routers); err != nil {
					t.Fatal(err)
				}
			}
			before, _ := p.Outcomes()
			if ret, _ := run(t, p, in); ret != tc.want {
				t.Errorf("program returned %d, want %d", ret, tc.want)
			}
			after, _ := p.Outcomes()
			if after[tc.outcome] != before[tc.outcome]+1 {
				t.Errorf("outcome %s not counted: %v", tc.outcome, after)
			}
		})
	}
	if err := p.RemoveVIP(vip4); err != nil {
		t.Fatal(err)
	}
	if ret, _ := run(t, p, in); ret != tcxNext {
		t.Errorf("VIP removed: program returned %d, want %d", ret, tcxNext)
	}
}

// TestFlowHashMatchesKernel gives every slot a MAC of its own and checks
// that random flows leave for the slot FlowHash names: the kernel and Go
// hash alike, with ports for TCP, UDP and SCTP, without for fragments and
// other protocols.
func TestFlowHashMatchesKernel(t *testing.T) {
	p := load(t)
	table := make([]Slot, Slots)
	for i := range table {
		table[i] = Slot{MAC: [6]byte{0x02, 0, 0, 0, byte(i >> 8), byte(i)}}
	}
	for _, vip := range []netip.Addr{vip4, vip6} {
		if err := p.SetTable(vip, table); err != nil {
			t.Fatal(err)
		}
		if err := p.SetRouters(vip, [][6]byte{router}); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	protos := []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_SCTP, unix.IPPROTO_ICMP, unix.IPPROTO_GRE}
	seen := map[int]bool{}
	for i := range 2000 {
		pk := packet{dstMAC: toHost, srcMAC: router, proto: protos[rng.IntN(len(protos))],
			sport: uint16(rng.Uint32()), dport: uint16(rng.Uint32()), fragment: i%7 == 0}
		if i%2 == 0 {
			pk.src, pk.dst = netip.AddrFrom4([4]byte{198, 19, byte(rng.Uint32()), byte(rng.Uint32())}), vip4
		} else {
			var a [16]byte
			binary.BigEndian.PutUint64(a[:], 0xfd00000100000000)
			binary.BigEndian.PutUint64(a[8:], rng.Uint64())
			pk.src, pk.dst = netip.AddrFrom16(a), vip6
		}
		ports := !pk.fragment && pk.proto != unix.IPPROTO_ICMP && pk.proto != unix.IPPROTO_GRE
		want := SlotOf(FlowHash(pk.src, pk.dst, pk.sport, pk.dport, pk.proto, ports))
		ret, out := run(t, p, pk.frame())
		if ret != tcxRedirect {
			t.Fatalf("flow %+v: program returned %d", pk, ret)
		}
		if got := int(out[4])<<8 | int(out[5]); got != want {
			t.Fatalf("flow %+v: kernel chose slot %d, FlowHash %d", pk, got, want)
		}
		seen[want] = true
	}
	if len(seen) < 1500 {
		t.Errorf("2000 flows hit only %d of %d slots", len(seen), Slots)
	}
}

// BenchmarkSpread measures the program on one packet, repeated in the
// kernel by BPF_PROG_TEST_RUN: ns/packet is the kernel's time per run. A
// spread rewrites the frame in place and the next run sees the rewritten
// one (source: the MAC it was sent to, destination: the peer), so that
// frame's source MACs are routers too: every run spreads, which the
// counters confirm. The redirect itself (the transmission) is not run.
func BenchmarkSpread(b *testing.B) {
	for _, c := range []struct {
		name    string
		pk      packet
		outcome string // every run's; "": none counted
	}{
		{"IPv4", packet{toHost, router, cli4, vip4, unix.IPPROTO_TCP, 40000, 80, false, 0}, "spread"},
		{"IPv6", packet{toHost, router, cli6, vip6, unix.IPPROTO_TCP, 40000, 80, false, 0}, "spread"},
		{"IPv4_local", packet{toHost, router, cli4, vip4, unix.IPPROTO_TCP, 40001, 80, false, 0}, "local"},
		{"IPv4_not_router", packet{toHost, stranger, cli4, vip4, unix.IPPROTO_TCP, 40000, 80, false, 0}, "not_router"},
		{"IPv4_other_address", packet{toHost, router, cli4, netip.MustParseAddr("198.18.0.11"), unix.IPPROTO_TCP, 40000, 80, false, 0}, ""},
	} {
		b.Run(c.name, func(b *testing.B) {
			p := load(b)
			table := uniform(peer, false)
			if c.outcome == "local" {
				table = uniform(peer, true)
			}
			for _, vip := range []netip.Addr{vip4, vip6} {
				if err := p.SetTable(vip, table); err != nil {
					b.Fatal(err)
				}
				if err := p.SetRouters(vip, [][6]byte{router, toHost, peer}); err != nil {
					b.Fatal(err)
				}
			}
			in := c.pk.frame()
			const repeat = 100000
			var total float64
			before, _ := p.Outcomes()
			b.ResetTimer()
			for range b.N {
				_, d, err := p.objs.Spread.Benchmark(in, repeat, nil)
				if err != nil {
					b.Fatal(err)
				}
				total += float64(d.Nanoseconds())
			}
			b.ReportMetric(total/float64(b.N), "ns/packet")
			// A run interrupted by a signal is run again: at least as
			// many, and none elsewhere.
			after, _ := p.Outcomes()
			for name, n := range after {
				switch n -= before[name]; {
				case name == c.outcome && n < uint64(b.N*repeat):
					b.Fatalf("%d runs counted %s, want %d: %v", n, name, b.N*repeat, after)
				case name != c.outcome && n != 0:
					b.Fatalf("%d runs counted %s, want all %q: %v", n, name, c.outcome, after)
				}
			}
		})
	}
}

// TestProgramMovedSlots checks the hand-over of a slot that moved here in a
// planned move: a TCP segment that is not a SYN and matches no socket here
// goes to the host that served the slot, one hop less, whether the router
// or a director sent it; the rest stays.
func TestProgramMovedSlots(t *testing.T) {
	p := load(t)
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

	prev := [6]byte{0x02, 0, 0, 0, 0, 0xaa}
	director := [6]byte{0x02, 0, 0, 0, 0, 0xdd}
	moved := uniform(peer, true)
	for i := range moved {
		moved[i].Prev, moved[i].Deadline = prev, bpf.Monotonic()+time.Minute
	}
	for _, vip := range []netip.Addr{vip4, vip6, server.Addr()} {
		if err := p.SetTable(vip, moved); err != nil {
			t.Fatal(err)
		}
		if err := p.SetRouters(vip, [][6]byte{router}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.SetPeers([][6]byte{director, prev}); err != nil {
		t.Fatal(err)
	}
	tcp4 := packet{dstMAC: toHost, srcMAC: router, src: cli4, dst: vip4, proto: unix.IPPROTO_TCP, sport: 40000, dport: 80}
	tcp6 := packet{dstMAC: toHost, srcMAC: router, src: cli6, dst: vip6, proto: unix.IPPROTO_TCP, sport: 40000, dport: 80}
	with := func(p packet, f func(*packet)) packet { f(&p); return p }
	local := packet{dstMAC: toHost, srcMAC: router, src: clientEnd.Addr(), dst: server.Addr(), proto: unix.IPPROTO_TCP, sport: clientEnd.Port(), dport: server.Port()}
	for _, tc := range []struct {
		name       string
		in         packet
		flags, ttl byte
		want       int32
		outcome    string
	}{
		{"IPv4 ACK from the router, no socket", tcp4, flagACK, 64, tcxRedirect, "handed"},
		{"IPv6 ACK from the router, no socket", tcp6, flagACK, 64, tcxRedirect, "handed"},
		{"ACK a director sent, no socket", with(tcp4, func(p *packet) { p.srcMAC = director }), flagACK, 63, tcxRedirect, "handed"},
		{"SYN: a new connection stays", tcp4, flagSYN, 64, tcxNext, "local"},
		{"SYN a director sent", with(tcp4, func(p *packet) { p.srcMAC = director }), flagSYN, 63, tcxNext, "received"},
		{"UDP stays", with(tcp4, func(p *packet) { p.proto = unix.IPPROTO_UDP }), 0, 64, tcxNext, "local"},
		{"a socket here owns it", local, flagACK, 64, tcxNext, "local"},
		{"from the previous host: not back", with(tcp4, func(p *packet) { p.srcMAC = prev }), flagACK, 63, tcxNext, "loop"},
		{"TTL spent", tcp4, flagACK, 1, tcxNext, "loop"},
		{"from a client on the segment", with(tcp4, func(p *packet) { p.srcMAC = stranger }), flagACK, 64, tcxNext, "not_router"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := p.Outcomes()
			in := tc.in.frameWith(tc.flags, tc.ttl)
			ret, out := run(t, p, in)
			if ret != tc.want {
				t.Errorf("program returned %d, want %d", ret, tc.want)
			}
			if tc.want == tcxRedirect {
				if [6]byte(out[0:6]) != prev || [6]byte(out[6:12]) != [6]byte(in[0:6]) {
					t.Errorf("sent to %x from %x, want %x from %x", out[0:6], out[6:12], prev, in[0:6])
				}
				want := tc.in.frameWith(tc.flags, tc.ttl-1)
				if !bytes.Equal(out[12:], want[12:]) {
					t.Errorf("packet out\n%x\nwant, one hop less\n%x", out[12:], want[12:])
				}
			}
			after, _ := p.Outcomes()
			if after[tc.outcome] != before[tc.outcome]+1 {
				t.Errorf("outcome %s not counted: %v", tc.outcome, after)
			}
		})
	}
	// Past its deadline, or a slot of another host a director sent.
	for i := range moved {
		moved[i].Deadline = bpf.Monotonic() - time.Second
	}
	if err := p.SetTable(vip4, moved); err != nil {
		t.Fatal(err)
	}
	if ret, _ := run(t, p, tcp4.frame()); ret != tcxNext {
		t.Errorf("past the deadline: program returned %d", ret)
	}
	if err := p.SetTable(vip4, uniform(peer, false)); err != nil {
		t.Fatal(err)
	}
	// A director whose table changed before this host's: an open
	// connection's segment goes on to the host this table names; a SYN, a
	// socket here, or a segment from that host itself stays.
	fromDirector := with(tcp4, func(p *packet) { p.srcMAC = director })
	for _, tc := range []struct {
		name    string
		in      packet
		flags   byte
		want    int32
		outcome string
	}{
		{"another host's slot from a director, no socket", fromDirector, flagACK, tcxRedirect, "handed"},
		{"another host's slot from a director, a SYN", fromDirector, flagSYN, tcxNext, "received"},
		{"another host's slot from a director, a socket here", with(local, func(p *packet) { p.srcMAC = director }), flagACK, tcxNext, "received"},
		{"another host's slot from that host", with(tcp4, func(p *packet) { p.srcMAC = peer }), flagACK, tcxNext, "loop"},
	} {
		if err := p.SetTable(tc.in.dst, uniform(peer, false)); err != nil {
			t.Fatal(err)
		}
		if err := p.SetPeers([][6]byte{director, prev, peer}); err != nil {
			t.Fatal(err)
		}
		before, _ := p.Outcomes()
		ret, out := run(t, p, tc.in.frameWith(tc.flags, 63))
		if ret != tc.want || (ret == tcxRedirect && [6]byte(out[0:6]) != peer) {
			t.Errorf("%s: program returned %d to %x, want %d to %x", tc.name, ret, out[0:6], tc.want, peer)
		}
		if after, _ := p.Outcomes(); after[tc.outcome] != before[tc.outcome]+1 {
			t.Errorf("%s: outcome %s not counted: %v", tc.name, tc.outcome, after)
		}
	}
	// A slot that moved away: its connections here stay here while the
	// router still sends to this host; the others go to the new host.
	away := uniform(peer, false)
	for i := range away {
		away[i].WasLocal, away[i].Deadline = true, bpf.Monotonic()+time.Minute
	}
	if err := p.SetTable(server.Addr(), away); err != nil {
		t.Fatal(err)
	}
	if ret, _ := run(t, p, local.frame()); ret != tcxNext {
		t.Errorf("moved away, a socket here: program returned %d, want %d", ret, tcxNext)
	}
	other := with(local, func(p *packet) { p.sport = 1 })
	if ret, out := run(t, p, other.frame()); ret != tcxRedirect || [6]byte(out[0:6]) != peer {
		t.Errorf("moved away, no socket here: program returned %d to %x, want %d to %x", ret, out[0:6], tcxRedirect, peer)
	}
	if ret, _ := run(t, p, local.frameWith(flagSYN, 64)); ret != tcxRedirect {
		t.Errorf("moved away, a SYN: program returned %d, want %d", ret, tcxRedirect)
	}
}
