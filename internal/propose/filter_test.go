package propose

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/net/bpf"
)

// segment builds an Ethernet frame from mac with a TCP segment from src to
// dst carrying flags; ihl is the IPv4 header's length in words, frag its
// fragment offset.
func segment(mac [6]byte, src, dst netip.Addr, flags byte, proto byte, ihl int, frag uint16) []byte {
	f := make([]byte, 14, 128)
	copy(f[6:12], mac[:])
	if dst.Is4() {
		binary.BigEndian.PutUint16(f[12:], 0x0800)
		ip := make([]byte, 4*ihl)
		ip[0] = 0x40 | byte(ihl)
		binary.BigEndian.PutUint16(ip[6:], frag)
		ip[9] = proto
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		f = append(f, ip...)
	} else {
		binary.BigEndian.PutUint16(f[12:], 0x86dd)
		ip := make([]byte, 40)
		ip[0] = 0x60
		ip[6] = proto
		s, d := src.As16(), dst.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		f = append(f, ip...)
	}
	tcp := make([]byte, 20)
	tcp[13] = flags
	return append(f, tcp...)
}

const (
	syn    = 0x02
	synAck = 0x12
	ack    = 0x10
)

func TestFilter(t *testing.T) {
	vip6 := netip.MustParseAddr("fd00::200")
	other6 := netip.MustParseAddr("fd00::201")
	src6 := netip.MustParseAddr("fd00:1::1")
	vips := []netip.Addr{netip.MustParseAddr("198.18.0.201"), vip6, vip, netip.MustParseAddr("fd00::300")}
	prog, err := filter(vips, false) // the VM knows no packet type
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		frame []byte
		pass  bool
	}{
		{"IPv4 SYN to a VIP", segment(router, src(1), vip, syn, 6, 5, 0), true},
		{"IPv4 SYN with options", segment(router, src(1), vip, syn, 6, 7, 0), true},
		{"IPv4 SYN to another VIP", segment(router, src(1), vips[0], syn, 6, 5, 0), true},
		{"IPv4 SYN-ACK", segment(router, src(1), vip, synAck, 6, 5, 0), false},
		{"IPv4 ACK", segment(router, src(1), vip, ack, 6, 5, 0), false},
		{"IPv4 SYN to another address", segment(router, src(1), routerA, syn, 6, 5, 0), false},
		{"IPv4 UDP", segment(router, src(1), vip, syn, 17, 5, 0), false},
		{"IPv4 fragment", segment(router, src(1), vip, syn, 6, 5, 100), false},
		{"IPv6 SYN to a VIP", segment(router, src6, vip6, syn, 6, 0, 0), true},
		{"IPv6 SYN to the last VIP", segment(router, src6, vips[3], syn, 6, 0, 0), true},
		{"IPv6 SYN to another address", segment(router, src6, other6, syn, 6, 0, 0), false},
		{"IPv6 ACK", segment(router, src6, vip6, ack, 6, 0, 0), false},
		{"IPv6 with an extension header", segment(router, src6, vip6, syn, 0, 0, 0), false},
		{"ARP", append(make([]byte, 12), 0x08, 0x06, 0, 1), false},
	} {
		n, err := vm.Run(c.frame)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if (n > 0) != c.pass {
			t.Errorf("%s: filter returned %d, want pass %v", c.name, n, c.pass)
		}
		if !c.pass {
			continue
		}
		mac, s, d, ok := parseSYN(c.frame[:min(n, len(c.frame))])
		if !ok || mac != router || !s.IsValid() || !d.IsValid() || !slices.Contains(vips, d) {
			t.Errorf("%s: parsed mac %x, %s to %s (ok %v)", c.name, mac, s, d, ok)
		}
	}
	if _, err := bpf.Assemble(mustFilter(t, vips, true)); err != nil {
		t.Errorf("the socket's filter does not assemble: %v", err)
	}
}

func mustFilter(t *testing.T, vips []netip.Addr, host bool) []bpf.Instruction {
	t.Helper()
	p, err := filter(vips, host)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Many VIPs do not overflow the conditional jumps' 8-bit offsets.
func TestFilterManyVIPs(t *testing.T) {
	var vips []netip.Addr
	for i := range 200 {
		vips = append(vips, netip.AddrFrom16([16]byte{0: 0xfd, 14: byte(i >> 8), 15: byte(i)}))
	}
	vips = append(vips, vip)
	vm, err := bpf.NewVM(mustFilter(t, vips, false))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range [][]byte{
		segment(router, src(1), vip, syn, 6, 5, 0),
		segment(router, netip.MustParseAddr("fd00:1::1"), vips[199], syn, 6, 0, 0),
	} {
		if n, err := vm.Run(f); err != nil || n == 0 {
			t.Errorf("a SYN to a VIP among %d: filter returned %d, %v", len(vips), n, err)
		}
	}
}
