package handover

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/arpshare/arpshare/internal/bpf"
)

// Outcomes of a TCP segment from a moved client, as the kernel program
// counts them (enum outcome in handover.c), by metric label.
var outcomeNames = []string{"handed", "local", "syn", "expired", "loop", "bad_mac"}

// Key names a moved client: a VIP and the Ethernet address the client's
// frames come from.
type Key struct {
	VIP netip.Addr
	MAC [6]byte
}

func (k Key) String() string { return k.VIP.String() + " " + net.HardwareAddr(k.MAC[:]).String() }

// Entry is what the kernel program needs to hand a client's flows over.
type Entry struct {
	Client    netip.Addr    // the client's IP: frames other hosts hand on are found by it
	Prev, Own [6]byte       // the previous owner's MAC and this host's
	Deadline  time.Duration // on the monotonic clock (CLOCK_MONOTONIC)
}

// Usage is what the kernel program counted for an entry.
type Usage struct {
	Packets uint64
	Last    time.Duration // monotonic; 0: none yet
}

// Map is the kernel's table of moved clients.
type Map interface {
	Put(Key, Entry) error
	Delete(Key, Entry) error
	Usage(Key, Entry) (Usage, error)
}

// Program is the loaded kernel program and its maps.
type Program struct {
	objs  handoverBPFObjects
	links bpf.Links
}

var _ Map = (*Program)(nil)

// LoadProgram loads the program into the kernel, with room for clients
// moved clients (0: as compiled, 65,536). It needs CAP_BPF and
// CAP_NET_ADMIN (or root) and a kernel with tcx (Linux 6.6).
func LoadProgram(clients int) (*Program, error) {
	p := &Program{}
	err := bpf.Load("handover program", loadHandoverBPF, func(spec *ebpf.CollectionSpec) {
		if clients > 0 {
			// By MAC and by IP. The kernel allocates the hash buckets up
			// front, 16 bytes per entry: capped at 8 MB.
			spec.Maps["moved"].MaxEntries = uint32(2 * min(clients, maxMoved))
		}
	}, &p.objs)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Attach runs the program on the ingress of the interface. Other tcx
// programs on it keep running: this one passes on what it does not hand
// over.
func (p *Program) Attach(ifindex int) error {
	return p.links.Attach("handover program", ifindex, p.objs.Handover, false)
}

// Detach takes the program off the interface.
func (p *Program) Detach(ifindex int) error {
	return p.links.Detach(ifindex)
}

// Close detaches the program everywhere and unloads it.
func (p *Program) Close() error {
	return errors.Join(p.links.Close(), p.objs.Close())
}

// maxMoved bounds how many moved clients the kernel's table holds at once.
const maxMoved = 262144

// Kinds of kernel keys (enum key_kind in handover.c).
const (
	kindMAC = 0
	kindIP  = 1
)

// kernelKeys are the two keys of a moved client: by its MAC, and by its IP.
func kernelKeys(k Key, e Entry) []handoverBPFClientKey {
	byMAC := handoverBPFClientKey{Vip: k.VIP.As16(), Kind: kindMAC}
	copy(byMAC.Id[:], k.MAC[:])
	keys := []handoverBPFClientKey{byMAC}
	if e.Client.IsValid() {
		keys = append(keys, handoverBPFClientKey{Vip: k.VIP.As16(), Id: e.Client.As16(), Kind: kindIP})
	}
	return keys
}

// Put adds or replaces a moved client; its counters start from zero.
func (p *Program) Put(k Key, e Entry) error {
	v := handoverBPFClientValue{PrevMac: e.Prev, OwnMac: e.Own, DeadlineNs: uint64(e.Deadline)}
	for _, kk := range kernelKeys(k, e) {
		if err := p.objs.Moved.Put(kk, v); err != nil {
			return fmt.Errorf("handover map: put %s: %w", k, err)
		}
	}
	return nil
}

// Delete removes a moved client; one already gone is not an error.
func (p *Program) Delete(k Key, e Entry) error {
	for _, kk := range kernelKeys(k, e) {
		if err := p.objs.Moved.Delete(kk); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("handover map: delete %s: %w", k, err)
		}
	}
	return nil
}

// Usage returns what the program counted for a moved client, both ways it
// is found.
func (p *Program) Usage(k Key, e Entry) (Usage, error) {
	var u Usage
	for _, kk := range kernelKeys(k, e) {
		var v handoverBPFClientValue
		if err := p.objs.Moved.Lookup(kk, &v); err != nil {
			return Usage{}, fmt.Errorf("handover map: lookup %s: %w", k, err)
		}
		u.Packets += v.Packets
		u.Last = max(u.Last, time.Duration(v.LastNs))
	}
	return u, nil
}

// Outcomes returns the program's counters by outcome, summed over CPUs.
func (p *Program) Outcomes() (map[string]uint64, error) {
	return bpf.Counters("handover outcomes", p.objs.Outcomes, outcomeNames)
}
