package propose

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/net/bpf"
)

// snap is how much of a frame the filter passes: the Ethernet header and
// the addresses behind it.
const snap = 64

// filter returns the classic BPF program of a watching socket: it passes
// the first segment of a TCP connection (SYN without ACK, not a fragment)
// to one of vips, cut to snap bytes, and drops everything else. With host,
// only frames addressed to this host (not those a promiscuous interface
// overhears, nor those it sends).
func filter(vips []netip.Addr, host bool) ([]bpf.Instruction, error) {
	var a asm
	if host {
		a.op(bpf.LoadExtension{Num: bpf.ExtType})
		a.jumpUnless(bpf.JumpEqual, 0 /* PACKET_HOST */, "drop")
	}
	a.op(bpf.LoadAbsolute{Off: 12, Size: 2})
	a.jumpIf(bpf.JumpEqual, 0x86dd, "v6")
	a.jumpUnless(bpf.JumpEqual, 0x0800, "drop")

	a.op(bpf.LoadAbsolute{Off: 23, Size: 1}) // IPv4 protocol
	a.jumpUnless(bpf.JumpEqual, 6, "drop")
	a.op(bpf.LoadAbsolute{Off: 20, Size: 2}) // flags and fragment offset
	a.jumpIf(bpf.JumpBitsSet, 0x1fff, "drop")
	a.op(bpf.LoadAbsolute{Off: 30, Size: 4}) // destination
	for _, v := range vips {
		if v.Is4() {
			b := v.As4()
			a.jumpIf(bpf.JumpEqual, binary.BigEndian.Uint32(b[:]), "syn4")
		}
	}
	a.jump("drop")
	a.label("syn4")
	a.op(bpf.LoadMemShift{Off: 14})               // X: the IPv4 header's length
	a.op(bpf.LoadIndirect{Off: 14 + 13, Size: 1}) // TCP flags
	a.jump("flags")

	a.label("v6")
	a.op(bpf.LoadAbsolute{Off: 20, Size: 1}) // next header: TCP right away
	a.jumpUnless(bpf.JumpEqual, 6, "drop")
	for i, v := range vips {
		if v.Is4() {
			continue
		}
		next := fmt.Sprintf("vip%d", i)
		b := v.As16()
		for w := range 4 {
			a.op(bpf.LoadAbsolute{Off: uint32(38 + 4*w), Size: 4})
			a.jumpUnless(bpf.JumpEqual, binary.BigEndian.Uint32(b[4*w:]), next)
		}
		a.jump("syn6")
		a.label(next)
	}
	a.jump("drop")
	a.label("syn6")
	a.op(bpf.LoadAbsolute{Off: 14 + 40 + 13, Size: 1}) // TCP flags
	a.label("flags")
	a.op(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x12}) // SYN and ACK
	a.jumpUnless(bpf.JumpEqual, 0x02, "drop")
	a.op(bpf.RetConstant{Val: snap})
	a.label("drop")
	a.op(bpf.RetConstant{Val: 0})
	return a.assemble()
}

// asm assembles a classic BPF program with named targets. A conditional
// jump reaches at most 255 instructions: each goes over an unconditional
// one (32-bit offset) to its target, so any number of VIPs fits.
type asm struct {
	prog   []bpf.Instruction
	labels map[string]int
	jumps  map[int]string // index of a Jump -> its target
}

func (a *asm) op(i bpf.Instruction) { a.prog = append(a.prog, i) }

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.prog)
}

// jump goes to target.
func (a *asm) jump(target string) {
	if a.jumps == nil {
		a.jumps = map[int]string{}
	}
	a.jumps[len(a.prog)] = target
	a.op(bpf.Jump{})
}

// jumpIf goes to target if cond holds for A and val.
func (a *asm) jumpIf(cond bpf.JumpTest, val uint32, target string) {
	a.op(bpf.JumpIf{Cond: cond, Val: val, SkipTrue: 0, SkipFalse: 1})
	a.jump(target)
}

// jumpUnless goes to target unless cond holds for A and val.
func (a *asm) jumpUnless(cond bpf.JumpTest, val uint32, target string) {
	a.op(bpf.JumpIf{Cond: cond, Val: val, SkipTrue: 1, SkipFalse: 0})
	a.jump(target)
}

func (a *asm) assemble() ([]bpf.Instruction, error) {
	for i, target := range a.jumps {
		at, ok := a.labels[target]
		if !ok || at <= i {
			return nil, fmt.Errorf("propose: filter: jump to %q", target)
		}
		a.prog[i] = bpf.Jump{Skip: uint32(at - i - 1)}
	}
	return a.prog, nil
}

// parseSYN reads what the filter passed: the neighbour's MAC and the
// connection's source and destination.
func parseSYN(f []byte) (mac [6]byte, src, dst netip.Addr, ok bool) {
	if len(f) < 14 {
		return mac, src, dst, false
	}
	copy(mac[:], f[6:12])
	switch binary.BigEndian.Uint16(f[12:14]) {
	case 0x0800:
		if len(f) < 14+20 {
			return mac, src, dst, false
		}
		src, dst = netip.AddrFrom4([4]byte(f[26:30])), netip.AddrFrom4([4]byte(f[30:34]))
	case 0x86dd:
		if len(f) < 14+40 {
			return mac, src, dst, false
		}
		src, dst = netip.AddrFrom16([16]byte(f[22:38])), netip.AddrFrom16([16]byte(f[38:54]))
	default:
		return mac, src, dst, false
	}
	return mac, src, dst, true
}
