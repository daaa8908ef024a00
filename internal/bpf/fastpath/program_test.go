package fastpath

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/google/go-cmp/cmp"

	"github.com/arpshare/arpshare/internal/bpf"
	"github.com/arpshare/arpshare/internal/bpf/bpftest"
)

const (
	tcxNext     = -1 // TC_ACT_UNSPEC
	tcxShot     = 2  // TC_ACT_SHOT
	tcxRedirect = 7  // TC_ACT_REDIRECT
)

var (
	broadcast = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	multicast = [6]byte{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}
	// BPF_PROG_TEST_RUN receives on loopback, whose MAC is all zeros: a
	// frame to it is for this host (a unicast request).
	toHost = [6]byte{}
)

// arpFrame is an ARP packet in an Ethernet frame, padded to 60 bytes as on
// the wire.
func arpFrame(dst, src [6]byte, op uint16, sha [6]byte, spa netip.Addr, tha [6]byte, tpa netip.Addr) []byte {
	b := make([]byte, 0, 60)
	b = append(b, dst[:]...)
	b = append(b, src[:]...)
	b = append(b, 0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4)
	b = binary.BigEndian.AppendUint16(b, op)
	s, t := spa.As4(), tpa.As4()
	b = append(b, sha[:]...)
	b = append(b, s[:]...)
	b = append(b, tha[:]...)
	b = append(b, t[:]...)
	return append(b, make([]byte, 60-len(b))...)
}

// TestProgram runs the kernel program on crafted frames (BPF_PROG_TEST_RUN):
// which it answers, which it drops as another host's, which it passes on,
// and what it counts and reports.
func TestProgram(t *testing.T) {
	bpftest.Privileged(t)
	p, err := Load(0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	own := [6]byte{0x02, 0, 0, 0, 0, 0xbb}
	mine := [6]byte{0x02, 0, 0, 0, 0, 0x01}   // a client this host answers
	theirs := [6]byte{0x02, 0, 0, 0, 0, 0x02} // another host's
	stranger := [6]byte{0x02, 0, 0, 0, 0, 0x03}
	vip := netip.MustParseAddr("198.18.0.200")
	vip2 := netip.MustParseAddr("198.18.0.201")
	ipMine := netip.MustParseAddr("198.18.0.101")
	ipTheirs := netip.MustParseAddr("198.18.0.102")
	ipStranger := netip.MustParseAddr("198.18.0.103")
	// Clients with a group or zero MAC, as a daemon that learned them
	// would have decided: never answered all the same.
	ipBroadcast := netip.MustParseAddr("198.18.0.104")
	ipMulticast := netip.MustParseAddr("198.18.0.105")
	ipZero := netip.MustParseAddr("198.18.0.106")
	// The state Attach writes, without attaching: the program runs on
	// test frames only.
	if err := p.objs.Iface.Put(uint32(0), fastpathBPFIfaceState{Mac: own}); err != nil {
		t.Fatal(err)
	}
	if err := p.Replace([]Decision{
		{VIP: vip, Client: ipMine, MAC: mine, Answer: true, Slot: 3},
		{VIP: vip, Client: ipTheirs, MAC: theirs, Answer: false, Slot: 3},
		{VIP: vip2, Client: ipMine, MAC: mine, Answer: true, Slot: 4},
		{VIP: vip, Client: ipBroadcast, MAC: broadcast, Answer: true, Slot: 3},
		{VIP: vip, Client: ipMulticast, MAC: multicast, Answer: true, Slot: 3},
		{VIP: vip, Client: ipZero, MAC: [6]byte{}, Answer: true, Slot: 3},
	}); err != nil {
		t.Fatal(err)
	}

	request := func(dst, sha [6]byte, spa, tpa netip.Addr) []byte {
		return arpFrame(dst, sha, 1, sha, spa, [6]byte{}, tpa)
	}
	run := func(t *testing.T, in []byte) (int32, []byte) {
		t.Helper()
		out := make([]byte, len(in))
		ret, err := p.objs.ArpFastpath.Run(&ebpf.RunOptions{Data: in, DataOut: out})
		if err != nil {
			t.Fatal(err)
		}
		return int32(ret), out
	}

	// Not serving yet: everything goes to user space.
	if ret, _ := run(t, request(broadcast, mine, ipMine, vip)); ret != tcxNext {
		t.Fatalf("not serving: program returned %d, want %d (to user space)", ret, tcxNext)
	}
	if err := p.SetServing(true); err != nil {
		t.Fatal(err)
	}

	truncated := request(broadcast, mine, ipMine, vip)[:40]
	badLen := request(broadcast, mine, ipMine, vip)
	badLen[18] = 8 // hardware address length
	for _, tc := range []struct {
		name string
		in   []byte
		want int32
		out  []byte // nil: unchanged
	}{
		{"broadcast request from a client this host answers", request(broadcast, mine, ipMine, vip), tcxRedirect,
			arpFrame(mine, own, 2, own, vip, mine, ipMine)},
		{"unicast request from it (a refresh)", request(toHost, mine, ipMine, vip), tcxRedirect,
			arpFrame(mine, own, 2, own, vip, mine, ipMine)},
		{"the same client for another VIP", request(broadcast, mine, ipMine, vip2), tcxRedirect,
			arpFrame(mine, own, 2, own, vip2, mine, ipMine)},
		{"another host's client", request(broadcast, theirs, ipTheirs, vip), tcxShot, nil},
		{"unknown client", request(broadcast, stranger, ipStranger, vip), tcxNext, nil},
		{"known client from a new MAC", request(broadcast, stranger, ipMine, vip), tcxNext, nil},
		{"known client asking for another address", request(broadcast, mine, ipMine, ipTheirs), tcxNext, nil},
		{"reply from a known client", arpFrame(own, mine, 2, mine, ipMine, own, vip), tcxNext, nil},
		{"a VIP as sender (conflict)", request(broadcast, stranger, vip, vip2), tcxNext, nil},
		{"unicast to another host (promiscuous)", request(stranger, mine, ipMine, vip), tcxNext, nil},
		{"broadcast sender MAC", request(broadcast, broadcast, ipBroadcast, vip), tcxNext, nil},
		{"multicast sender MAC", request(broadcast, multicast, ipMulticast, vip), tcxNext, nil},
		{"zero sender MAC", request(broadcast, [6]byte{}, ipZero, vip), tcxNext, nil},
		{"sender MAC not the Ethernet source", arpFrame(broadcast, stranger, 1, mine, ipMine, [6]byte{}, vip), tcxNext, nil},
		{"broadcast Ethernet source", arpFrame(broadcast, broadcast, 1, mine, ipMine, [6]byte{}, vip), tcxNext, nil},
		{"truncated", truncated, tcxNext, nil},
		{"malformed lengths", badLen, tcxNext, nil},
		{"not ARP", append(append(append([]byte{}, broadcast[:]...), mine[:]...), append([]byte{0x08, 0x00}, make([]byte, 46)...)...), tcxNext, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ret, out := run(t, tc.in)
			if ret != tc.want {
				t.Errorf("program returned %d, want %d", ret, tc.want)
			}
			want := tc.out
			if want == nil {
				want = tc.in
			}
			if d := cmp.Diff(want, out); d != "" {
				t.Errorf("frame out (-want +got):\n%s", d)
			}
		})
	}

	for _, c := range []struct {
		slot               uint8
		answered, notOwner uint64
	}{{3, 2, 1}, {4, 1, 0}, {0, 0, 0}} {
		a, n, err := p.Counts(c.slot)
		if err != nil {
			t.Fatal(err)
		}
		if a != c.answered || n != c.notOwner {
			t.Errorf("slot %d: answered %d, not owner %d; want %d, %d", c.slot, a, n, c.answered, c.notOwner)
		}
	}
	punts, err := p.Punts()
	if err != nil {
		t.Fatal(err)
	}
	// "not ARP" is not counted: the program leaves other traffic alone
	// without a word.
	if d := cmp.Diff(map[string]uint64{"not_serving": 1, "unknown": 3, "mac_changed": 1, "other": 4, "bad_sender": 5, "vlan": 0, "bad_checksum": 0}, punts); d != "" {
		t.Errorf("punts (-want +got):\n%s", d)
	}

	// Every client decided here is reported, once, with its last unicast
	// request if any; draining forgets the reports.
	var got []Seen
	if err := p.DrainSeen(func(s Seen) { got = append(got, s) }); err != nil {
		t.Fatal(err)
	}
	now := bpf.Monotonic()
	check := func(vip, client netip.Addr, mac [6]byte, direct bool) {
		t.Helper()
		for _, s := range got {
			if s.VIP != vip || s.Client != client {
				continue
			}
			if s.MAC != mac || s.Last <= 0 || s.Last > now || now-s.Last > time.Minute {
				t.Errorf("%s %s: reported %+v (now %v)", vip, client, s, now)
			}
			if (s.Direct != 0) != direct {
				t.Errorf("%s %s: unicast request at %v, want one: %v", vip, client, s.Direct, direct)
			}
			return
		}
		t.Errorf("%s %s: not reported seen", vip, client)
	}
	if len(got) != 3 {
		t.Errorf("reported %d clients, want 3: %+v", len(got), got)
	}
	check(vip, ipMine, mine, true)
	check(vip2, ipMine, mine, false)
	check(vip, ipTheirs, theirs, false)
	var again []Seen
	if err := p.DrainSeen(func(s Seen) { again = append(again, s) }); err != nil {
		t.Fatal(err)
	}
	if len(again) != 0 {
		t.Errorf("reported again after draining: %+v", again)
	}

	// Replace forgets what it does not list.
	if err := p.Replace([]Decision{{VIP: vip, Client: ipTheirs, MAC: theirs, Answer: true, Slot: 3}}); err != nil {
		t.Fatal(err)
	}
	if n, err := p.Len(); err != nil || n != 1 {
		t.Errorf("after Replace: %d decisions (%v), want 1", n, err)
	}
	if ret, _ := run(t, request(broadcast, mine, ipMine, vip)); ret != tcxNext {
		t.Errorf("replaced decision: program returned %d, want %d", ret, tcxNext)
	}
	if ret, _ := run(t, request(broadcast, theirs, ipTheirs, vip)); ret != tcxRedirect {
		t.Errorf("new decision: program returned %d, want %d", ret, tcxRedirect)
	}
	if err := p.SetServing(false); err != nil {
		t.Fatal(err)
	}
	if ret, _ := run(t, request(broadcast, theirs, ipTheirs, vip)); ret != tcxNext {
		t.Errorf("serving off: program returned %d, want %d", ret, tcxNext)
	}
}

// tag inserts a VLAN tag (tpid, tci) after the frame's MAC addresses.
func tag(frame []byte, tpid, tci uint16) []byte {
	b := append([]byte{}, frame[:12]...)
	b = binary.BigEndian.AppendUint16(b, tpid)
	b = binary.BigEndian.AppendUint16(b, tci)
	return append(b, frame[12:]...)
}

// TestProgramReceived runs the program attached to a veth in a namespace of
// its own, on frames the kernel received, which BPF_PROG_TEST_RUN cannot
// make: VLAN-tagged ones (the kernel takes the outer tag out of the frame
// before tc, so that the request looks untagged) and one whose ARP packet
// is not in the skb's linear part.
func TestProgramReceived(t *testing.T) {
	bpftest.Privileged(t)
	v := bpftest.NewVeth(t)
	p, err := Load(0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	own := [6]byte{0x02, 0, 0, 0, 0, 0xbb}
	mine := [6]byte{0x02, 0, 0, 0, 0, 0x01}
	vip, client := netip.MustParseAddr("198.18.0.200"), netip.MustParseAddr("198.18.0.101")
	if err := v.Do(func() error { return p.Attach(v.In, own) }); err != nil {
		t.Fatal(err)
	}
	if err := p.Replace([]Decision{{VIP: vip, Client: client, MAC: mine, Answer: true, Slot: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := p.SetServing(true); err != nil {
		t.Fatal(err)
	}
	req := arpFrame(broadcast, mine, 1, mine, client, [6]byte{}, vip)
	reply := arpFrame(mine, own, 2, own, vip, mine, client)
	// A packet socket sends a frame of more than a page with only its
	// Ethernet header in the linear part.
	long := append(append([]byte{}, req...), make([]byte, 4200)...)
	counts := func() (answered, vlan uint64) {
		a, _, err := p.Counts(1)
		if err != nil {
			t.Fatal(err)
		}
		punts, err := p.Punts()
		if err != nil {
			t.Fatal(err)
		}
		return a, punts["vlan"]
	}
	for _, tc := range []struct {
		name string
		in   []byte
		out  []byte // the reply; nil: passed on as a VLAN's
	}{
		{"untagged", req, reply},
		// The request rewritten in place, padding and all.
		{"ARP beyond a short linear part", long, append(append([]byte{}, reply...), make([]byte, 4200)...)},
		{"tagged for VLAN 100", tag(req, 0x8100, 100), nil},
		{"802.1ad-tagged for VLAN 100", tag(req, 0x88a8, 100), nil},
		// This interface's request with a priority: answered, and the
		// reply keeps the tag.
		{"priority tag only (VLAN 0)", tag(req, 0x8100, 5<<13), tag(reply, 0x8100, 5<<13)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a0, v0 := counts()
			v.Run(t, p.objs.ArpFastpath, tc.in)
			a1, v1 := counts()
			if tc.out != nil && (a1 != a0+1 || v1 != v0) {
				t.Errorf("answered %d, passed on as a VLAN's %d; want answered", a1-a0, v1-v0)
			}
			if tc.out == nil && (a1 != a0 || v1 != v0+1) {
				t.Errorf("answered %d, passed on as a VLAN's %d; want passed on as a VLAN's", a1-a0, v1-v0)
			}
			if tc.out == nil {
				return
			}
			out := v.Receive(5*time.Second, func(f []byte) bool { return [6]byte(f[:6]) == mine })
			if d := cmp.Diff(tc.out, out); d != "" {
				t.Errorf("reply (-want +got):\n%s", d)
			}
		})
	}
}

// BenchmarkProgram measures the program's cost per ARP request in the
// kernel (BPF_PROG_TEST_RUN, which adds the test harness's own overhead):
// answered, and left to another host.
func BenchmarkProgram(b *testing.B) {
	bpftest.Privileged(b)
	p, err := Load(0)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	own := [6]byte{0x02, 0, 0, 0, 0, 0xbb}
	mine := [6]byte{0x02, 0, 0, 0, 0, 0x01}
	vip, client := netip.MustParseAddr("198.18.0.200"), netip.MustParseAddr("198.18.0.101")
	if err := p.objs.Iface.Put(uint32(0), fastpathBPFIfaceState{Mac: own, Serving: 1}); err != nil {
		b.Fatal(err)
	}
	for _, answer := range []bool{true, false} {
		if err := p.Put([]Decision{{VIP: vip, Client: client, MAC: mine, Answer: answer}}); err != nil {
			b.Fatal(err)
		}
		name := map[bool]string{true: "answered", false: "not_owner"}[answer]
		b.Run(name, func(b *testing.B) {
			in := arpFrame(broadcast, mine, 1, mine, client, [6]byte{}, vip)
			_, d, err := p.objs.ArpFastpath.Benchmark(in, b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(d.Nanoseconds()), "kernel-ns/op")
		})
	}
}

// BenchmarkReplace measures how long a view change keeps the known clients
// in user space: the time to rewrite every decision.
func BenchmarkReplace(b *testing.B) {
	bpftest.Privileged(b)
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("clients=%d", n), func(b *testing.B) {
			p, err := Load(n)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			vip := netip.MustParseAddr("198.18.0.200")
			ds := make([]Decision, n)
			for i := range ds {
				ds[i] = Decision{VIP: vip, Client: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Answer: i%3 == 0}
			}
			for b.Loop() {
				if err := p.Replace(ds); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
