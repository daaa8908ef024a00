package handover

import (
	"context"
	"iter"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/bpf"
)

// Defaults, each with where its number comes from.
const (
	// DefaultGrace is how long the new owner hands a moved client's
	// unknown flows to the previous owner: long enough for most sessions
	// that a planned move interrupts (a deploy, a drain for maintenance).
	DefaultGrace = 10 * time.Minute
	// DefaultIdle ends an entry early when nothing was handed over for
	// that long: the client has most likely no connection left on the
	// previous owner. It is longer than the keepalive of most database
	// drivers and gRPC (a minute or less), so a quiet but alive session
	// still sends something in time.
	DefaultIdle = 2 * time.Minute
	// DefaultStopWait bounds how long a graceful stop waits for the
	// connections handed over to it to end, after draining; the systemd
	// unit's TimeoutStopSec allows for it.
	DefaultStopWait = 30 * time.Second
	sweepEvery      = time.Second
)

// Config is the [handover] section, checked.
type Config struct {
	Enabled  bool
	Grace    time.Duration
	Idle     time.Duration
	StopWait time.Duration
}

// DefaultConfig is the config when [handover] sets nothing.
func DefaultConfig() Config {
	return Config{Enabled: true, Grace: DefaultGrace, Idle: DefaultIdle, StopWait: DefaultStopWait}
}

// FlowGrace is how long the flows that move to this host in a planned
// move hand their open connections to the host that served them: Grace,
// or nothing when the handover is off.
func (c Config) FlowGrace() time.Duration {
	if !c.Enabled {
		return 0
	}
	return c.Grace
}

// ServedVIP is a VIP this host serves, as the handover needs it.
type ServedVIP struct {
	VIP       netip.Addr
	Policy    policy.Policy
	Interface string
	MAC       net.HardwareAddr // of Interface; nil while it is not open
}

// Source tells the handover what this host serves and which clients it
// knows.
type Source interface {
	Served() []ServedVIP
	// All walks the clients without copying the table (see
	// arp.ClientTable.All).
	All() iter.Seq[arp.Entry]
	Len() int // how many clients, cheaply
}

// moved is one moved client, as this host tracks it.
type moved struct {
	client  netip.Addr
	prev    string // the previous owner's name
	entry   Entry
	packets uint64
	active  time.Duration // when it last handed a packet over (or was added)
}

// Handover keeps the kernel's table of moved clients in step with the view.
type Handover struct {
	cfg  Config
	self string
	log  *slog.Logger
	now  func() time.Duration // monotonic
	src  Source
	// capacity is how many moved clients the kernel's table holds.
	capacity int

	// load loads the kernel program: LoadProgram, or a fake in tests.
	load func(clients int) (program, error)

	mu        sync.Mutex
	kmap      Map     // nil: handover unavailable
	prog      program // nil: not loaded (or a test map)
	loadErr   error
	attachErr map[string]error // by interface, logged once
	ifaces    map[string]int   // attached: interface -> index
	served    []ServedVIP
	known     int // clients known at the last update
	last      *gossip.View
	// primed: the VIP's clients were looked at once, with its interface's
	// MAC known. Before that, this host has just started (or the VIP was
	// just added), and a client it owns was owned by whoever would own it
	// without this host: that is who took it while this host was away.
	// The first view already holds the whole cluster (see gossip.Cluster).
	primed map[netip.Addr]bool
	moved  map[Key]*moved
	ended  map[string]uint64 // entries ended, by reason

	// poke wakes Run after an update; watch follows link changes
	// (kernelLinks, nil in tests); every is sweepEvery but in tests.
	poke  chan struct{}
	watch func(ctx context.Context) (<-chan netlink.LinkUpdate, error)
	every time.Duration
}

// New returns a Handover for host self, with room for as many moved
// clients as the client table holds; Open loads the kernel program.
func New(cfg Config, self string, maxClients int, src Source, log *slog.Logger) *Handover {
	h := newHandover(cfg, self, src, log, bpf.Monotonic)
	h.capacity = maxClients
	h.watch = kernelLinks
	return h
}

// Open loads the kernel program, if enabled; if that fails it says so once
// and the host hands nothing over. Call it before the first view: a host
// that starts re-points the clients it owns at once, and must hand their
// connections over from the first packet.
func (h *Handover) Open() {
	if !h.cfg.Enabled {
		return
	}
	p, err := h.load(h.capacity)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.loadErr = err
		h.log.Warn("connection handover unavailable: planned moves reset the moved clients' open connections", "error", err)
		return
	}
	h.prog, h.kmap = p, p
	h.update(nil)
}

// program is the loaded kernel program: its map of moved clients, the
// interfaces it runs on, and its counters.
type program interface {
	Map
	Attach(ifindex int) error
	Detach(ifindex int) error
	Outcomes() (map[string]uint64, error)
	Close() error
}

var _ program = (*Program)(nil)

func loadProgram(clients int) (program, error) {
	p, err := LoadProgram(clients)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return p, nil
}

// NewWithMap returns a Handover over a given map, without a kernel program:
// for tests of the bookkeeping.
func NewWithMap(cfg Config, self string, src Source, log *slog.Logger, m Map, now func() time.Duration) *Handover {
	h := newHandover(cfg, self, src, log, now)
	h.kmap = m
	return h
}

func newHandover(cfg Config, self string, src Source, log *slog.Logger, now func() time.Duration) *Handover {
	return &Handover{cfg: cfg, self: self, src: src, log: log, now: now, load: loadProgram,
		attachErr: map[string]error{}, ifaces: map[string]int{}, moved: map[Key]*moved{}, ended: map[string]uint64{},
		primed: map[netip.Addr]bool{}, poke: make(chan struct{}, 1), every: sweepEvery}
}

func (h *Handover) String() string { return "handover" }

// Run sweeps the table until ctx ends, then unloads the program. It
// sweeps every sweepEvery only while there is something to sweep (see
// pending); otherwise it sleeps until an update or a change of a link
// (an interface made anew needs the program attached again).
func (h *Handover) Run(ctx context.Context) error {
	defer h.close()
	links := h.watchLinks(ctx)
	h.mu.Lock()
	// Without the link feed, the interfaces the program is on are looked
	// at every sweep; without a program, there are none.
	blind := links == nil && h.prog != nil
	h.mu.Unlock()
	t := time.NewTimer(h.every)
	defer t.Stop()
	for {
		var tick <-chan time.Time
		if blind || h.pending() {
			t.Reset(h.every)
			tick = t.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
			h.Sweep()
		case <-h.poke:
		case _, ok := <-links:
			if !ok {
				links, blind = nil, true // the feed ended: sweep by the clock from now on
			}
			h.mu.Lock()
			h.attach()
			h.mu.Unlock()
		}
	}
}

// pending reports whether a sweep has work: entries to age, a VIP not
// looked at yet, an interface to retry.
func (h *Handover) pending() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.kmap == nil {
		return false
	}
	return len(h.moved) > 0 || len(h.attachErr) > 0 || slices.ContainsFunc(h.served, func(s ServedVIP) bool { return !h.primed[s.VIP] })
}

// watchLinks returns the kernel's link changes until ctx ends, or nil if
// it cannot follow them (then Run sweeps every sweepEvery).
func (h *Handover) watchLinks(ctx context.Context) <-chan netlink.LinkUpdate {
	h.mu.Lock()
	loaded := h.prog != nil
	h.mu.Unlock()
	if !loaded || h.watch == nil {
		return nil
	}
	ch, err := h.watch(ctx)
	if err != nil {
		h.log.Debug("not following link changes: looking at the interfaces every second", "error", err)
		return nil
	}
	// A change before the feed began is not in it.
	h.mu.Lock()
	h.attach()
	h.mu.Unlock()
	return ch
}

// kernelLinks follows the kernel's link changes until ctx ends.
func kernelLinks(ctx context.Context) (<-chan netlink.LinkUpdate, error) {
	ch := make(chan netlink.LinkUpdate, 16)
	if err := netlink.LinkSubscribeWithOptions(ch, ctx.Done(), netlink.LinkSubscribeOptions{}); err != nil {
		return nil, err
	}
	return ch, nil
}

func (h *Handover) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.prog != nil {
		if err := h.prog.Close(); err != nil {
			h.log.Warn("unload handover program", "error", err)
		}
		h.prog, h.kmap = nil, nil
	}
}

// Update takes a new view (nil: the same view, after a reload changed what
// this host serves): it adds the clients that moved here from a live host
// and drops those no longer here or whose previous owner is gone.
func (h *Handover) Update(v *gossip.View) {
	h.mu.Lock()
	h.update(v)
	h.mu.Unlock()
	select {
	case h.poke <- struct{}{}: // Run looks whether it has work now
	default:
	}
}

// update is Update with h.mu held.
func (h *Handover) update(v *gossip.View) {
	if h.kmap == nil {
		if v != nil {
			h.last = v // for when the program is loaded
		}
		return
	}
	served := h.src.Served()
	h.served = served
	h.attach()
	if v == nil {
		v = h.last
	}
	if v == nil {
		h.known = 0
		for range h.src.All() {
			h.known++
		}
		return
	}
	old := h.last
	if old == nil {
		old = v
	}
	h.last = v

	byVIP := map[netip.Addr]ServedVIP{}
	for _, s := range served {
		byVIP[s.VIP] = s
	}
	h.known = h.addMoved(v, old, byVIP, h.src.All())
	for _, s := range served {
		if s.MAC != nil {
			h.primed[s.VIP] = true
		}
	}
	for vip := range h.primed {
		if _, ok := byVIP[vip]; !ok {
			delete(h.primed, vip)
		}
	}
	// An entry outlives the client's next move: a host the client left
	// hands on, to the host before it, what it does not know itself. It
	// ends with its grace period, when idle, when its previous owner is
	// gone or when the VIP is no longer served here.
	for k, m := range h.moved {
		pm, ok := v.Member(m.prev)
		switch _, served := byVIP[k.VIP]; {
		case !ok || !pm.Live():
			h.end(k, "previous_gone")
		case !served:
			h.end(k, "unserved")
		}
	}
}

// addMoved starts handing over the clients that moved here from a live host
// between old and v, and keeps handing over those that still need it. It
// returns how many clients it looked at.
func (h *Handover) addMoved(v, old *gossip.View, byVIP map[netip.Addr]ServedVIP, clients iter.Seq[arp.Entry]) int {
	now := h.now()
	known := h.stillKnown(clients)
	added, failed := map[string]int{}, 0
	var failure error
	n := 0
	for c := range clients {
		n++
		s, ok := byVIP[c.VIP]
		if !ok || s.MAC == nil {
			continue
		}
		if !s.Policy.Exclusive() || !s.Policy.Answers(v, c.VIP, c.IP) {
			continue // not ours, or no single owner to hand back to (race)
		}
		k := Key{VIP: c.VIP, MAC: c.MAC}
		if m, ok := h.moved[k]; ok && m.client != c.IP && known[k] {
			continue
		}
		prev, newly, first := h.previous(v, old, s, c, k)
		if prev == "" || prev == h.self {
			continue
		}
		prevMAC, ok := segmentMAC(v, prev)
		if !ok {
			continue
		}
		e := Entry{Client: c.IP, Prev: prevMAC, Own: [6]byte(s.MAC), Deadline: now + h.cfg.Grace}
		if m, ok := h.moved[k]; ok && (!newly || first) && m.prev == prev && m.entry.Own == e.Own {
			continue // already handing over; the deadline stands
		}
		if m, ok := h.moved[k]; ok && m.client != c.IP {
			h.kmap.Delete(k, m.entry) // the MAC's other IP: its key by IP goes
		}
		if err := h.kmap.Put(k, e); err != nil {
			failed, failure = failed+1, err
			continue
		}
		h.log.Debug("handing a moved client's open connections to its previous owner", "vip", c.VIP, "client", c.IP, "previous", prev)
		h.moved[k] = &moved{client: c.IP, prev: prev, entry: e, active: now}
		known[k] = true // c is in the table: the MAC's other IPs leave it be
		added[prev]++
	}
	if len(added) > 0 {
		h.log.Info("handing moved clients' open connections to their previous owners", "clients_by_previous_owner", added, "grace", h.cfg.Grace)
	}
	if failed > 0 {
		h.log.Warn("cannot hand some moved clients over: their open connections will be reset", "clients", failed, "error", failure)
	}
	return n
}

// stillKnown returns the moved entries whose client is still known with
// that MAC. A MAC with several IPs (a host with two addresses, a router) is
// one entry: the first IP that needs it keeps it, while it is known. Sized
// by the moved entries, not the table: it is made on every update, and a
// set of every client was tens of megabytes a second during a flood.
func (h *Handover) stillKnown(clients iter.Seq[arp.Entry]) map[Key]bool {
	known := map[Key]bool{}
	if len(h.moved) == 0 {
		return known
	}
	for c := range clients {
		k := Key{VIP: c.VIP, MAC: c.MAC}
		if m, ok := h.moved[k]; ok && m.client == c.IP {
			known[k] = true
		}
	}
	return known
}

// previous says who owned client c (key k) before this host, "" if nobody
// else did; newly, whether it moved here since old; first, whether this is
// the first look at the VIP's clients (see primed).
func (h *Handover) previous(v, old *gossip.View, s ServedVIP, c arp.Entry, k Key) (prev string, newly, first bool) {
	newly, first = true, !h.primed[c.VIP]
	if first {
		prev = s.Policy.OwnerWithout(v, c.VIP, c.IP, h.self)
	} else if o := s.Policy.Owner(old, c.VIP, c.IP); o != h.self {
		prev = o
	} else if m, ok := h.moved[k]; ok && m.client == c.IP {
		prev, newly = m.prev, false // owned here before too: keep handing over
	}
	return prev, newly, first
}

// segmentMAC returns the serving MAC of member name, if it is live and says
// which MAC is on this segment.
func segmentMAC(v *gossip.View, name string) ([6]byte, bool) {
	pm, ok := v.Member(name)
	if !ok || !pm.Live() {
		return [6]byte{}, false // a dead host has nothing left to hand to
	}
	if len(pm.Meta.MACs) != 1 {
		// A host with several interfaces does not say which MAC is on
		// this segment (see docs/limitations.md).
		return [6]byte{}, false
	}
	mac, err := net.ParseMAC(pm.Meta.MACs[0])
	if err != nil || len(mac) != 6 {
		return [6]byte{}, false
	}
	return [6]byte(mac), true
}

// end removes an entry; reason labels the metric.
func (h *Handover) end(k Key, reason string) {
	m := h.moved[k]
	if err := h.kmap.Delete(k, m.entry); err != nil {
		h.log.Warn("end a handover", "client", k, "error", err)
		return
	}
	delete(h.moved, k)
	h.ended[reason]++
	h.log.Debug("handover ended", "vip", k.VIP, "client", m.client, "previous", m.prev, "reason", reason, "packets", m.packets)
}

// Sweep ends the entries past their grace period or idle for too long, and
// retries the interfaces the program could not be attached to. A host that
// has just joined learns most clients from its peers' tables after its
// view changed: it looks at them again.
func (h *Handover) Sweep() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.kmap == nil {
		return
	}
	now := h.now()
	unprimed := slices.ContainsFunc(h.served, func(s ServedVIP) bool { return !h.primed[s.VIP] })
	if unprimed || h.src.Len() != h.known {
		h.update(nil)
	} else {
		h.attach()
	}
	for k, m := range h.moved {
		if u, err := h.kmap.Usage(k, m.entry); err == nil {
			if u.Packets != m.packets && u.Last > m.active {
				m.active = u.Last
			}
			m.packets = u.Packets
		}
		switch {
		case now > m.entry.Deadline:
			h.end(k, "grace")
		case now-m.active > h.cfg.Idle:
			h.end(k, "idle")
		}
	}
}

// attach puts the program on every interface that serves a VIP, and takes
// it off the others. Call with h.mu held.
func (h *Handover) attach() {
	if h.prog == nil {
		return
	}
	want := map[string]bool{}
	for _, s := range h.served {
		want[s.Interface] = true
	}
	for name := range want {
		ifi, err := net.InterfaceByName(name)
		if err == nil && h.ifaces[name] == ifi.Index {
			continue
		}
		if index, ok := h.ifaces[name]; ok { // gone, or made anew
			h.detach(name, index)
		}
		if err == nil {
			err = h.prog.Attach(ifi.Index)
		}
		if err != nil {
			if h.attachErr[name] == nil {
				h.log.Warn("connection handover unavailable on this interface: planned moves reset its clients' open connections", "interface", name, "error", err)
			}
			h.attachErr[name] = err
			continue
		}
		if h.attachErr[name] != nil {
			h.log.Info("connection handover available on this interface again", "interface", name)
		}
		delete(h.attachErr, name)
		h.ifaces[name] = ifi.Index
	}
	for name, index := range h.ifaces {
		if !want[name] {
			h.detach(name, index)
		}
	}
}

// detach takes the program off an interface. Call with h.mu held.
func (h *Handover) detach(name string, index int) {
	if err := h.prog.Detach(index); err != nil {
		h.log.Warn("take the handover program off an interface", "interface", name, "error", err)
	}
	delete(h.ifaces, name)
}
