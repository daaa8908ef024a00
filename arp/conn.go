package arp

import (
	"errors"
	"fmt"
	"net"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Conn is one interface's raw ARP socket: whole Ethernet frames in and out.
type Conn interface {
	ReadFrame(b []byte) (int, error)
	WriteFrame(b []byte, dst net.HardwareAddr) error
	Close() error
}

var _ Conn = (*rawConn)(nil)

const etherTypeARP = 0x0806

// arpFilter lets only ARP frames reach user space that arrived on this
// interface's own segment for this host: not frames this host sent itself
// (PACKET_OUTGOING), not frames for another host's MAC (PACKET_OTHERHOST,
// which is also how the kernel marks a frame of a VLAN that has no
// interface here), and not frames whose stripped VLAN tag names a VLAN (a
// priority tag, VLAN 0, belongs to this interface). The rest of the
// interface's traffic stays in the kernel.
var arpFilter = mustAssemble([]bpf.Instruction{
	/* 0 */ bpf.LoadExtension{Num: bpf.ExtType},
	/* 1 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING, SkipTrue: 8},
	/* 2 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OTHERHOST, SkipTrue: 7},
	/* 3 */ bpf.LoadExtension{Num: bpf.ExtVLANTagPresent},
	/* 4 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipTrue: 2},
	/* 5 */ bpf.LoadExtension{Num: bpf.ExtVLANTag},
	/* 6 */ bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x0fff, SkipTrue: 3},
	/* 7 */ bpf.LoadAbsolute{Off: 12, Size: 2},
	/* 8 */ bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: etherTypeARP, SkipTrue: 1},
	/* 9 */ bpf.RetConstant{Val: 1 << 16},
	/* 10 */ bpf.RetConstant{Val: 0},
})

func mustAssemble(prog []bpf.Instruction) []bpf.RawInstruction {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		panic(err)
	}
	return raw
}

type rawConn struct {
	c     *packet.Conn
	batch *batch // see ReadBatch; only the reading goroutine touches it
}

// ErrInterfaceDown is returned by Listen for an interface that exists but is
// not up: a socket on it would only report errors until it comes up.
var ErrInterfaceDown = errors.New("interface is down")

// Listen opens a raw ARP socket on the named interface and returns it with
// the interface's MAC address.
func Listen(name string) (Conn, net.HardwareAddr, error) {
	ifi, err := usable(name)
	if err != nil {
		return nil, nil, err
	}
	c, err := packet.Listen(ifi, packet.Raw, etherTypeARP, &packet.Config{Filter: arpFilter})
	if err != nil {
		return nil, nil, fmt.Errorf("open raw ARP socket: %w", err)
	}
	growReadBuffer(c)
	return &rawConn{c: c}, ifi.HardwareAddr, nil
}

// readBuffer is the receive buffer asked for the raw socket: a burst of
// broadcast requests (a switch flooding after a restart, a segment-wide
// scan) that arrives while the daemon is not scheduled waits here instead
// of being dropped. The default, net.core.rmem_default, holds about 300
// frames; 4 MB holds some 6,000, a third of a second at 20,000 a second.
const readBuffer = 4 << 20

// growReadBuffer raises the socket's receive buffer to readBuffer, past
// net.core.rmem_max with CAP_NET_ADMIN (the daemon has it), else as far as
// rmem_max allows.
func growReadBuffer(c *packet.Conn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, readBuffer) != nil {
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, readBuffer)
		}
	})
}

// usable returns the named interface if it is an Ethernet interface that is
// up.
func usable(name string) (*net.Interface, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, err
	}
	if ifi.Flags&net.FlagUp == 0 {
		return nil, ErrInterfaceDown
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("not an Ethernet interface (hardware address %q)", ifi.HardwareAddr)
	}
	return ifi, nil
}

func (r *rawConn) ReadFrame(b []byte) (int, error) {
	n, _, err := r.c.ReadFrom(b)
	return n, err
}

func (r *rawConn) WriteFrame(b []byte, dst net.HardwareAddr) error {
	_, err := r.c.WriteTo(b, &packet.Addr{HardwareAddr: dst})
	return err
}

func (r *rawConn) Close() error { return r.c.Close() }
