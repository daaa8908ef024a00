package fastpath

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/arpshare/arpshare/internal/bpf"
)

// Decision is the daemon's answer to one client of one VIP.
type Decision struct {
	VIP, Client netip.Addr // both IPv4 (ARP) or both IPv6 (NDP)
	MAC         [6]byte    // the client's, as the daemon knows it: another one goes to the daemon
	Answer      bool       // false: another host answers, stay silent
	Slot        uint8      // the VIP's counters (Counts)
}

// Seen is a client the kernel decided on since the last DrainSeen.
type Seen struct {
	VIP, Client netip.Addr
	MAC         [6]byte
	Last        time.Duration // on the programs' clock (bpf.Monotonic)
	Direct      time.Duration // the last unicast request; 0: none
}

// MaxSlots is how many VIPs an interface's counters can tell apart.
const MaxSlots = 256

// Reasons the program passed an ARP request on to user space, as Punts
// names them (enum punt in fastpath.c).
var puntNames = []string{"not_serving", "unknown", "mac_changed", "other", "bad_sender", "vlan", "bad_checksum"}

// Program is the loaded program and its maps, for one interface.
type Program struct {
	objs    fastpathBPFObjects
	link    link.Link
	ifindex int
	ndp     bool // answers Neighbor Solicitations, not ARP requests
}

// Load loads the ARP program into the kernel, with room for clients
// decisions (0: as compiled, 262,144; at most 524,288). It needs CAP_BPF
// and CAP_NET_ADMIN (or root) and a kernel with tcx (Linux 6.6).
func Load(clients int) (*Program, error) { return load(clients, false) }

// LoadNDP loads the NDP program, which answers the Neighbor Solicitations
// of IPv6 clients as the ARP one answers ARP requests; as Load.
func LoadNDP(clients int) (*Program, error) { return load(clients, true) }

func load(clients int, ndp bool) (*Program, error) {
	used, unused := []string{"decisions", "seen"}, []string{"decisions6", "seen6"}
	if ndp {
		used, unused = unused, used
	}
	p := &Program{ndp: ndp}
	err := bpf.Load(p.proto()+" fast path", loadFastpathBPF, func(spec *ebpf.CollectionSpec) {
		if clients > 0 {
			// The kernel allocates the hash buckets up front, 16 bytes an
			// entry: capped at 8 MB. Clients beyond go to user space.
			spec.Maps[used[0]].MaxEntries = uint32(min(clients, maxDecisions))
		}
		// The other protocol's maps stay empty: no buckets for them.
		for _, m := range unused {
			spec.Maps[m].MaxEntries = 1
		}
	}, &p.objs)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Attach runs the program on the ingress of the interface whose MAC is
// mac, not serving until SetServing says so. Other tcx programs on it keep
// running: this one passes on what it does not decide. A program runs on
// one interface at a time.
func (p *Program) Attach(ifindex int, mac [6]byte) error {
	if p.link != nil && p.ifindex == ifindex {
		return nil
	}
	if err := p.Detach(); err != nil {
		return err
	}
	if err := p.objs.Iface.Put(uint32(0), fastpathBPFIfaceState{Mac: mac}); err != nil {
		return fmt.Errorf("arp fast path: interface state: %w", err)
	}
	prog := p.objs.ArpFastpath
	if p.ndp {
		prog = p.objs.NdpFastpath
	}
	l, err := bpf.AttachIngress(p.proto()+" fast path", ifindex, prog, false)
	if err != nil {
		return err
	}
	p.link, p.ifindex = l, ifindex
	return nil
}

// Detach takes the program off its interface.
func (p *Program) Detach() error {
	if p.link == nil {
		return nil
	}
	l := p.link
	p.link = nil
	if err := l.Close(); err != nil {
		return fmt.Errorf("detach arp fast path: %w", err)
	}
	return nil
}

// SetServing lets the program answer from its decisions, or stops it: then
// every request goes to user space.
func (p *Program) SetServing(on bool) error {
	var st fastpathBPFIfaceState
	if err := p.objs.Iface.Lookup(uint32(0), &st); err != nil {
		return fmt.Errorf("arp fast path: interface state: %w", err)
	}
	st.Serving = 0
	if on {
		st.Serving = 1
	}
	if err := p.objs.Iface.Put(uint32(0), st); err != nil {
		return fmt.Errorf("arp fast path: interface state: %w", err)
	}
	return nil
}

func key(vip, client netip.Addr) fastpathBPFDecisionKey {
	v, c := vip.As4(), client.As4()
	// As on the wire: the program compares bytes.
	return fastpathBPFDecisionKey{Vip: binary.NativeEndian.Uint32(v[:]), Client: binary.NativeEndian.Uint32(c[:])}
}

func key6(vip, client netip.Addr) fastpathBPFDecision6Key {
	return fastpathBPFDecision6Key{Vip: vip.As16(), Client: client.As16()}
}

func (p *Program) proto() string {
	if p.ndp {
		return "ndp"
	}
	return "arp"
}

func addr(a uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], a)
	return netip.AddrFrom4(b)
}

func value(d Decision) fastpathBPFDecision {
	v := fastpathBPFDecision{ClientMac: d.MAC, Slot: d.Slot}
	if d.Answer {
		v.Action = 1
	}
	return v
}

// maxDecisions bounds how many clients the kernel decides on.
const maxDecisions = 524288

// batch is how many entries one system call writes or deletes.
const batch = 4096

// Put adds or replaces decisions: IPv4 ones for the ARP program, IPv6
// ones for the NDP program. A full map is not an error: the clients left
// out go to user space.
func (p *Program) Put(ds []Decision) error {
	if p.ndp {
		return putBatches(p.objs.Decisions6, ds, func(d Decision) bool { return d.VIP.Is6() && d.Client.Is6() && !d.Client.Is4In6() }, key6)
	}
	return putBatches(p.objs.Decisions, ds, func(d Decision) bool { return d.VIP.Is4() && d.Client.Is4() }, key)
}

// putBatches writes the decisions that fit into m, a batch at a time.
func putBatches[K any](m *ebpf.Map, ds []Decision, fits func(Decision) bool, key func(vip, client netip.Addr) K) error {
	keys := make([]K, 0, min(len(ds), batch))
	vals := make([]fastpathBPFDecision, 0, min(len(ds), batch))
	for len(ds) > 0 {
		keys, vals = keys[:0], vals[:0]
		n := min(len(ds), batch)
		for _, d := range ds[:n] {
			if fits(d) {
				keys = append(keys, key(d.VIP, d.Client))
				vals = append(vals, value(d))
			}
		}
		ds = ds[n:]
		if len(keys) == 0 {
			continue
		}
		if _, err := m.BatchUpdate(keys, vals, nil); err != nil {
			if errors.Is(err, unix.E2BIG) {
				return nil
			}
			return fmt.Errorf("fast path: write decisions: %w", err)
		}
	}
	return nil
}

// Replace makes ds the only decisions. Call it with serving off: the map is
// emptied first.
func (p *Program) Replace(ds []Decision) error {
	var err error
	if p.ndp {
		err = clearMap[fastpathBPFDecision6Key](p.objs.Decisions6)
	} else {
		err = clearMap[fastpathBPFDecisionKey](p.objs.Decisions)
	}
	if err != nil {
		return fmt.Errorf("%s fast path: clear decisions: %w", p.proto(), err)
	}
	return p.Put(ds)
}

// clearMap empties a decisions map.
func clearMap[K any](m *ebpf.Map) error {
	var (
		cursor ebpf.MapBatchCursor
		keys   = make([]K, batch)
		vals   = make([]fastpathBPFDecision, batch)
	)
	for {
		n, err := m.BatchLookupAndDelete(&cursor, keys, vals, nil)
		if n == 0 || errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Len returns how many decisions the map holds.
func (p *Program) Len() (int, error) {
	var n int
	var err error
	if p.ndp {
		n, err = count[fastpathBPFDecision6Key](p.objs.Decisions6)
	} else {
		n, err = count[fastpathBPFDecisionKey](p.objs.Decisions)
	}
	if err != nil {
		return 0, fmt.Errorf("%s fast path: count decisions: %w", p.proto(), err)
	}
	return n, nil
}

func count[K any](m *ebpf.Map) (int, error) {
	n := 0
	var k K
	var v fastpathBPFDecision
	it := m.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	return n, it.Err()
}

// DrainSeen calls fn for every client the program decided on since the
// last call (at most one report a second per client), and forgets them.
func (p *Program) DrainSeen(fn func(Seen)) error {
	if p.ndp {
		return drainSeen(p.objs.Seen6, func(k fastpathBPFDecision6Key) (netip.Addr, netip.Addr) {
			return netip.AddrFrom16(k.Vip), netip.AddrFrom16(k.Client)
		}, fn)
	}
	return drainSeen(p.objs.Seen, func(k fastpathBPFDecisionKey) (netip.Addr, netip.Addr) {
		return addr(k.Vip), addr(k.Client)
	}, fn)
}

func drainSeen[K any](m *ebpf.Map, addrs func(K) (vip, client netip.Addr), fn func(Seen)) error {
	var (
		cursor ebpf.MapBatchCursor
		keys   = make([]K, 256)
		vals   = make([]fastpathBPFSeenValue, 256)
	)
	for {
		n, err := m.BatchLookupAndDelete(&cursor, keys, vals, nil)
		for i := range n {
			v := vals[i]
			vip, client := addrs(keys[i])
			fn(Seen{VIP: vip, Client: client, MAC: v.ClientMac,
				Last: time.Duration(v.LastNs), Direct: time.Duration(v.DirectNs)})
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("arp fast path: read seen clients: %w", err)
		}
		if n == 0 {
			return nil
		}
	}
}

// Arm has the program wake the reader of Wakes at its next report. Call
// it before DrainSeen: a report made while draining wakes it again.
func (p *Program) Arm() error {
	if err := p.objs.Armed.Put(uint32(0), uint32(1)); err != nil {
		return fmt.Errorf("%s fast path: arm the wake-up: %w", p.proto(), err)
	}
	return nil
}

// Wakes returns a channel that receives when the program made a report
// after Arm, until ctx ends. Between reports, nothing runs: the reading
// goroutine blocks in the kernel without a timeout.
func (p *Program) Wakes(ctx context.Context) (<-chan struct{}, error) {
	rd, err := ringbuf.NewReader(p.objs.Wake)
	if err != nil {
		return nil, fmt.Errorf("%s fast path: wake-ups: %w", p.proto(), err)
	}
	context.AfterFunc(ctx, func() { rd.Close() })
	ch := make(chan struct{}, 1)
	go func() {
		var rec ringbuf.Record
		for rd.ReadInto(&rec) == nil {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	return ch, nil
}

// Counts returns the frames the program decided for the VIP in slot:
// answered, and left to another host.
func (p *Program) Counts(slot uint8) (answered, notOwner uint64, err error) {
	if answered, err = bpf.Count(p.objs.Counts, 2*uint32(slot)); err == nil {
		notOwner, err = bpf.Count(p.objs.Counts, 2*uint32(slot)+1)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%s fast path: counts: %w", p.proto(), err)
	}
	return answered, notOwner, nil
}

// Punts returns how many requests the program passed on to user space,
// by reason.
func (p *Program) Punts() (map[string]uint64, error) {
	return bpf.Counters(p.proto()+" fast path: punts", p.objs.Punts, puntNames)
}

// Close detaches the program and unloads it.
func (p *Program) Close() error {
	return errors.Join(p.Detach(), p.objs.Close())
}

// ProgramName and NDPProgramName are the programs' names in the kernel,
// for tools that look for them (bpftool, the lab's bench).
const (
	ProgramName    = "arp_fastpath"
	NDPProgramName = "ndp_fastpath"
)

// Check loads the program and unloads it: it reports whether this kernel
// and these privileges allow the fast path (attaching needs tcx, Linux 6.6,
// and is only tried on an interface).
func Check() error {
	p, err := Load(1)
	if err != nil {
		return err
	}
	return p.Close()
}
