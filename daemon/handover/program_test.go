package handover

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

const (
	tcxNext     = -1 // TC_ACT_UNSPEC
	tcxRedirect = 7  // TC_ACT_REDIRECT
)

func privileged(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("ARPSHARE_REQUIRE_PRIVILEGED") != "" {
			t.Fatal("loading a BPF program needs root")
		}
		t.Skip("loading a BPF program needs root")
	}
}

// frame builds an Ethernet frame carrying a TCP segment from src to dst.
func frame(srcMAC [6]byte, src, dst netip.AddrPort, flags byte) []byte {
	b := make([]byte, 0, 128)
	b = append(b, 0x02, 0, 0, 0, 0, 0xbb) // destination: this host
	b = append(b, srcMAC[:]...)
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	tcp[12] = 5 << 4
	tcp[13] = flags
	if src.Addr().Is4() {
		b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IP)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(tcp)))
		ip[8], ip[9] = 64, unix.IPPROTO_TCP
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		b = append(b, ip...)
	} else {
		b = binary.BigEndian.AppendUint16(b, unix.ETH_P_IPV6)
		ip := make([]byte, 40)
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(tcp)))
		ip[6], ip[7] = unix.IPPROTO_TCP, 64
		s, d := src.Addr().As16(), dst.Addr().As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		b = append(b, ip...)
	}
	return append(b, tcp...)
}

const (
	flagSYN = 0x02
	flagACK = 0x10
	flagPSH = 0x08
)

// TestProgram runs the kernel program on crafted frames (BPF_PROG_TEST_RUN):
// which are handed over, and how they are rewritten.
func TestProgram(t *testing.T) {
	privileged(t)
	p, err := Load()
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
	prev := [6]byte{0x02, 0, 0, 0, 0, 0xaa}
	own := [6]byte{0x02, 0, 0, 0, 0, 0xbb}
	vip4 := netip.MustParseAddrPort("198.18.0.200:80")
	vip6 := netip.MustParseAddrPort("[fd00::200]:80")
	cli4 := netip.MustParseAddrPort("198.18.0.101:40000")
	cli6 := netip.MustParseAddrPort("[fd00::101]:40000")
	expired := [6]byte{0x02, 0, 0, 0, 0, 0x03}
	for _, k := range []Key{{vip4.Addr(), moved}, {vip6.Addr(), moved}, {server.Addr(), moved}} {
		if err := p.Put(k, Entry{Prev: prev, Own: own, Deadline: monotonic() + time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Put(Key{vip4.Addr(), expired}, Entry{Prev: prev, Own: own, Deadline: monotonic() - time.Second}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		frame  []byte
		want   int
		handed bool
	}{
		{"IPv4 ACK of a moved client, no socket", frame(moved, cli4, vip4, flagACK|flagPSH), tcxRedirect, true},
		{"IPv6 ACK of a moved client, no socket", frame(moved, cli6, vip6, flagACK), tcxRedirect, true},
		{"SYN of a moved client", frame(moved, cli4, vip4, flagSYN), tcxNext, false},
		{"IPv6 SYN of a moved client", frame(moved, cli6, vip6, flagSYN), tcxNext, false},
		{"client that did not move", frame(other, cli4, vip4, flagACK), tcxNext, false},
		{"entry past its deadline", frame(expired, cli4, vip4, flagACK), tcxNext, false},
		{"segment of an established socket here", frame(moved, clientEnd, server, flagACK), tcxNext, false},
		{"segment only a listener matches", frame(moved, netip.AddrPortFrom(clientEnd.Addr(), 1), server, flagACK), tcxRedirect, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := make([]byte, len(tc.frame))
			ret, err := p.objs.Handover.Run(&ebpf.RunOptions{Data: tc.frame, DataOut: out})
			if err != nil {
				t.Fatal(err)
			}
			if int32(ret) != int32(tc.want) {
				t.Errorf("program returned %d, want %d", int32(ret), tc.want)
			}
			want := tc.frame
			if tc.handed {
				want = append(append(append([]byte{}, prev[:]...), own[:]...), tc.frame[12:]...)
			}
			if d := cmp.Diff(want, out); d != "" {
				t.Errorf("frame out (-want +got):\n%s", d)
			}
		})
	}
	u, err := p.Usage(Key{vip4.Addr(), moved})
	if err != nil {
		t.Fatal(err)
	}
	if u.Packets != 1 || u.Last == 0 {
		t.Errorf("usage of the IPv4 entry = %+v, want 1 packet and a time", u)
	}
	o, err := p.Outcomes()
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(map[string]uint64{"handed": 3, "local": 1, "syn": 2, "expired": 1}, o); d != "" {
		t.Errorf("outcomes (-want +got):\n%s", d)
	}
}
