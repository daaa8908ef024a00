package bpftest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Veth is a veth pair in a network namespace of its own, for running a
// program on frames as the kernel receives them, which BPF_PROG_TEST_RUN
// cannot make: a VLAN tag the kernel has already moved out of the frame
// (it does so for every tagged frame before tc), or headers beyond a short
// linear part. A program attached to In's ingress (inside Do) sees the
// frames sent from Out; what it sends back out of In arrives at Out.
// Everything is gone when the test ends: the namespace has no name, and
// dies with its last handle.
type Veth struct {
	ns       netns.NsHandle
	In, Out  int     // interface indexes, in the namespace
	InMAC    [6]byte // In's address: frames to it are for "this host"
	sock     int     // a packet socket on Out, all protocols
	stats    interface{ Close() error }
	received chan []byte
	stop     atomic.Bool   // the reader ends
	done     chan struct{} // it has
}

// vethMTU lets a frame of more than a page through: a packet socket sends
// such a frame with only its Ethernet header in the linear part.
const vethMTU = 9000

// NewVeth makes the namespace and the pair (In and Out, both up, MTU 9000,
// no IPv6, so that nothing but the test's frames crosses), and turns on the
// kernel's BPF run counts for Run. It needs root.
func NewVeth(t testing.TB) *Veth {
	t.Helper()
	v := &Veth{sock: -1, received: make(chan []byte, 64), done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		// The thread is never given back to the runtime: it ends with
		// this goroutine, so no other code runs in the namespace.
		runtime.LockOSThread()
		h, err := netns.New()
		if err != nil {
			errc <- fmt.Errorf("new network namespace: %w", err)
			return
		}
		v.ns = h
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.close)
	if err := v.Do(v.setup); err != nil {
		t.Fatal(err)
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatalf("BPF run counts: %v", err)
	}
	v.stats = stats
	go v.read()
	return v
}

// Do runs fn on a thread in the namespace: attach programs there (an
// interface index means the namespace's interface).
func (v *Veth) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread ends with the goroutine
		if err := netns.Set(v.ns); err != nil {
			errc <- fmt.Errorf("enter the test namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// setup runs in the namespace.
func (v *Veth) setup() error {
	if err := os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0); err != nil {
		return err
	}
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = "in", vethMTU
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "out"}); err != nil {
		return fmt.Errorf("add veth pair: %w", err)
	}
	in, err := netlink.LinkByName("in")
	if err != nil {
		return err
	}
	out, err := netlink.LinkByName("out")
	if err != nil {
		return err
	}
	for _, l := range []netlink.Link{in, out} {
		if err := netlink.LinkSetMTU(l, vethMTU); err != nil {
			return fmt.Errorf("MTU of %s: %w", l.Attrs().Name, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", l.Attrs().Name, err)
		}
	}
	v.In, v.Out = in.Attrs().Index, out.Attrs().Index
	copy(v.InMAC[:], in.Attrs().HardwareAddr)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	v.sock = fd
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: v.Out}); err != nil {
		return fmt.Errorf("bind packet socket to out: %w", err)
	}
	// The kernel keeps a received frame's VLAN tag out of the frame:
	// auxdata tells it, and read puts it back.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		return fmt.Errorf("packet socket auxdata: %w", err)
	}
	// A closed socket does not wake a blocked read: the reader looks up
	// ten times a second.
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("packet socket timeout: %w", err)
	}
	// Carrier: a frame sent before both ends are up is dropped.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		l, err := netlink.LinkByIndex(v.In)
		if err != nil {
			return err
		}
		if l.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("veth pair not up after 10 s")
		}
	}
}

func htons(x uint16) uint16 { return x<<8 | x>>8 }

// read passes on every frame that arrives at Out from In (not the test's
// own), until the socket closes.
func (v *Veth) read() {
	defer close(v.done)
	defer close(v.received)
	buf := make([]byte, vethMTU+64)
	oob := make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.TpacketAuxdata{}))))
	for !v.stop.Load() {
		n, oobn, _, from, err := unix.Recvmsg(v.sock, buf, oob, 0)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil {
			return
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		select {
		case v.received <- withTag(buf[:n], oob[:oobn]):
		default: // the test reads only what it waits for
		}
	}
}

// withTag returns a copy of frame with the VLAN tag that auxdata (a
// control message of a packet socket) reports, if any, put back.
func withTag(frame, oob []byte) []byte {
	out := append([]byte(nil), frame...)
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil || len(frame) < 12 {
		return out
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_PACKET || m.Header.Type != unix.PACKET_AUXDATA ||
			len(m.Data) < int(unsafe.Sizeof(unix.TpacketAuxdata{})) {
			continue
		}
		aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&m.Data[0]))
		if aux.Status&unix.TP_STATUS_VLAN_VALID == 0 {
			continue
		}
		tpid := uint16(unix.ETH_P_8021Q)
		if aux.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 {
			tpid = aux.Vlan_tpid
		}
		tagged := append([]byte(nil), frame[:12]...)
		tagged = binary.BigEndian.AppendUint16(tagged, tpid)
		tagged = binary.BigEndian.AppendUint16(tagged, aux.Vlan_tci)
		return append(tagged, frame[12:]...)
	}
	return out
}

// Send sends frame from Out, for a reader on In that is not a program.
func (v *Veth) Send(t testing.TB, frame []byte) {
	t.Helper()
	to := &unix.SockaddrLinklayer{Protocol: htons(binary.BigEndian.Uint16(frame[12:])), Ifindex: v.Out}
	if err := unix.Sendto(v.sock, frame, 0, to); err != nil {
		t.Fatalf("send a %d-byte frame from out: %v", len(frame), err)
	}
}

// Run sends frame from Out and waits until prog (attached to In) has run
// once more: a frame prog receives is processed when Run returns, though
// what prog sends on may still be on its way (Receive).
func (v *Veth) Run(t testing.TB, prog *ebpf.Program, frame []byte) {
	t.Helper()
	before := runCount(t, prog)
	v.Send(t, frame)
	for deadline := time.Now().Add(10 * time.Second); runCount(t, prog) == before; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the program did not run on a %d-byte frame within 10 s", len(frame))
		}
	}
}

func runCount(t testing.TB, prog *ebpf.Program) uint64 {
	t.Helper()
	s, err := prog.Stats()
	if err != nil {
		t.Fatalf("program run count: %v", err)
	}
	return s.RunCount
}

// Receive returns the next frame that arrives at Out and satisfies match,
// or nil if none does within timeout.
func (v *Veth) Receive(timeout time.Duration, match func([]byte) bool) []byte {
	deadline := time.After(timeout)
	for {
		select {
		case f, ok := <-v.received:
			if !ok {
				return nil
			}
			if match(f) {
				return f
			}
		case <-deadline:
			return nil
		}
	}
}

func (v *Veth) close() {
	if v.stats != nil {
		v.stats.Close()
	}
	if v.sock >= 0 {
		v.stop.Store(true)
		if v.stats != nil { // the reader started
			<-v.done
		}
		unix.Close(v.sock)
	}
	v.ns.Close()
}
