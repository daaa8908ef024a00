package spread

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/arpshare/arpshare/internal/bpf"
)

// Slots is how many slots one VIP's table has (SLOTS in spread.c).
const Slots = 4096

// MaxVIPs bounds the VIPs whose routers are spread (MAX_VIPS in spread.c).
const MaxVIPs = 64

// Outcomes of a packet to a VIP with routers, as the kernel program counts
// them (enum outcome in spread.c), by metric label.
var outcomeNames = []string{"spread", "local", "not_router", "no_table", "bad_packet", "bad_mac", "received", "handed", "loop"}

// Slot says who serves a slot's flows.
type Slot struct {
	MAC   [6]byte // that host's MAC on the segment
	Local bool    // this host
	// Prev is the host that served the slot before a planned move, which
	// still holds its open connections, until Deadline (CLOCK_MONOTONIC;
	// 0: none).
	Prev     [6]byte
	Deadline time.Duration
	// WasLocal: the slot moved away from this host until Deadline; its
	// open connections here stay here.
	WasLocal bool
}

// Program is the loaded kernel program and its maps.
type Program struct {
	objs  spreadBPFObjects
	links bpf.Links
	// index is each VIP's place in the slots map (two tables each);
	// half, which of its two tables is in use.
	index map[netip.Addr]uint32
	half  map[netip.Addr]uint32
	vips  int
}

// LoadProgram loads the program with room for vips VIPs (at most
// MaxVIPs). It needs CAP_BPF and CAP_NET_ADMIN (or root) and a kernel with
// tcx (Linux 6.6).
func LoadProgram(vips int) (*Program, error) {
	vips = min(max(vips, 1), MaxVIPs)
	p := &Program{index: map[netip.Addr]uint32{}, half: map[netip.Addr]uint32{}, vips: vips}
	err := bpf.Load("spread program", loadSpreadBPF, func(spec *ebpf.CollectionSpec) {
		spec.Maps["slots"].MaxEntries = uint32(2 * vips * Slots)
	}, &p.objs)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Attach runs the program on the ingress of the interface, ahead of the
// programs already there: a routed flow is spread before the handover
// looks at it.
func (p *Program) Attach(ifindex int) error {
	return p.links.Attach("spread program", ifindex, p.objs.Spread, true)
}

// Detach takes the program off the interface.
func (p *Program) Detach(ifindex int) error {
	return p.links.Detach(ifindex)
}

// Close detaches the program everywhere and unloads it.
func (p *Program) Close() error {
	return errors.Join(p.links.Close(), p.objs.Close())
}

// place returns vip's place in the slots map, taking a free one if it has
// none.
func (p *Program) place(vip netip.Addr) (uint32, error) {
	if i, ok := p.index[vip]; ok {
		return i, nil
	}
	used := map[uint32]bool{}
	for _, i := range p.index {
		used[i] = true
	}
	for i := range uint32(p.vips) {
		if !used[i] {
			p.index[vip] = i
			return i, nil
		}
	}
	return 0, fmt.Errorf("spread: no room for VIP %s: at most %d VIPs", vip, p.vips)
}

// SetTable makes table (Slots entries; empty: nobody to spread to) vip's.
// It is written beside the table in use, which is then swapped for it.
func (p *Program) SetTable(vip netip.Addr, table []Slot) error {
	if len(table) != 0 && len(table) != Slots {
		return fmt.Errorf("spread: VIP %s: table of %d slots, want %d", vip, len(table), Slots)
	}
	i, err := p.place(vip)
	if err != nil {
		return err
	}
	next := 1 - p.half[vip]
	base := (2*i + next) * Slots
	if len(table) > 0 {
		keys := make([]uint32, Slots)
		values := make([]spreadBPFSlot, Slots)
		for j, s := range table {
			keys[j] = base + uint32(j)
			values[j] = spreadBPFSlot{Mac: s.MAC, Prev: s.Prev, DeadlineNs: uint64(max(s.Deadline, 0))}
			if s.Local {
				values[j].Local = 1
			}
			if s.WasLocal {
				values[j].WasLocal = 1
			}
		}
		if err := p.putSlots(keys, values); err != nil {
			return fmt.Errorf("spread: VIP %s: %w", vip, err)
		}
	}
	v := spreadBPFVipValue{Base: base, Filled: uint32(min(len(table), 1))}
	if err := p.objs.Vips.Put(vip.As16(), v); err != nil {
		return fmt.Errorf("spread: VIP %s: %w", vip, err)
	}
	p.half[vip] = next
	return nil
}

// putSlots writes slots in one system call where the kernel allows it.
func (p *Program) putSlots(keys []uint32, values []spreadBPFSlot) error {
	_, err := p.objs.Slots.BatchUpdate(keys, values, nil)
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	for j := range keys {
		if err := p.objs.Slots.Put(keys[j], values[j]); err != nil {
			return err
		}
	}
	return nil
}

// SetRouters makes macs the routers of vip, replacing those it had.
func (p *Program) SetRouters(vip netip.Addr, macs [][6]byte) error {
	want := map[spreadBPFRouterKey]bool{}
	for _, m := range macs {
		want[spreadBPFRouterKey{Vip: vip.As16(), Mac: m}] = true
	}
	var k spreadBPFRouterKey
	var v uint8
	var stale []spreadBPFRouterKey
	it := p.objs.Routers.Iterate()
	for it.Next(&k, &v) {
		if k.Vip == vip.As16() && !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("spread: routers of %s: %w", vip, err)
	}
	for _, k := range stale {
		if err := p.objs.Routers.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("spread: routers of %s: %w", vip, err)
		}
	}
	for k := range want {
		if err := p.objs.Routers.Put(k, uint8(1)); err != nil {
			return fmt.Errorf("spread: router %s of %s: %w", net.HardwareAddr(k.Mac[:]), vip, err)
		}
	}
	return nil
}

// SetPeers makes macs the cluster's hosts: frames from them to a VIP with
// routers are flows a director sent here.
func (p *Program) SetPeers(macs [][6]byte) error {
	want := map[spreadBPFPeerKey]bool{}
	for _, m := range macs {
		want[spreadBPFPeerKey{Mac: m}] = true
	}
	var k spreadBPFPeerKey
	var v uint8
	var stale []spreadBPFPeerKey
	it := p.objs.Peers.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("spread: peers: %w", err)
	}
	for _, k := range stale {
		if err := p.objs.Peers.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("spread: peers: %w", err)
		}
	}
	for k := range want {
		if err := p.objs.Peers.Put(k, uint8(1)); err != nil {
			return fmt.Errorf("spread: peer %s: %w", net.HardwareAddr(k.Mac[:]), err)
		}
	}
	return nil
}

// RemoveVIP stops spreading vip's routers' traffic and frees its place.
func (p *Program) RemoveVIP(vip netip.Addr) error {
	if err := p.SetRouters(vip, nil); err != nil {
		return err
	}
	if err := p.objs.Vips.Delete(vip.As16()); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("spread: VIP %s: %w", vip, err)
	}
	delete(p.index, vip)
	delete(p.half, vip)
	return nil
}

// Outcomes returns the program's counters by outcome, summed over CPUs.
func (p *Program) Outcomes() (map[string]uint64, error) {
	return bpf.Counters("spread outcomes", p.objs.Outcomes, outcomeNames)
}
