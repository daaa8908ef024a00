package spread

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/bpf"
)

const sweepEvery = time.Second

// RoutedVIP is a VIP this host serves with routers, whose traffic is spread.
type RoutedVIP struct {
	VIP       netip.Addr
	Name      string
	Interface string
	Routers   []netip.Addr
}

// Source tells the spreader which VIPs have routers, and the MACs of the
// clients this host knows: a router asks for the VIP like any client, so
// the client table has its MAC.
type Source interface {
	Routed() []RoutedVIP
	MAC(vip, ip netip.Addr) ([6]byte, bool)
}

// program is the loaded kernel program, or a fake in tests.
type program interface {
	Attach(ifindex int) error
	Detach(ifindex int) error
	SetTable(vip netip.Addr, table []Slot) error
	SetRouters(vip netip.Addr, macs [][6]byte) error
	SetPeers(macs [][6]byte) error
	RemoveVIP(vip netip.Addr) error
	Outcomes() (map[string]uint64, error)
	Close() error
}

var _ program = (*Program)(nil)

func loadProgram(vips int) (program, error) {
	p, err := LoadProgram(vips)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return p, nil
}

// vipState is what the kernel has of one VIP.
type vipState struct {
	served  RoutedVIP
	hosts   []Host    // the table was made from these
	made    bool      // a table is in the kernel
	table   []Slot    // that table
	routers [][6]byte // the routers' MACs in the kernel
	known   map[netip.Addr][6]byte
}

// Spreader keeps the kernel program's tables and routers in step with the
// view and the client table.
type Spreader struct {
	self string
	log  *slog.Logger
	src  Source
	load func(vips int) (program, error)
	// grace is how long a slot that moved here in a planned move hands
	// its unknown TCP segments to the host that served it (0: never).
	grace time.Duration
	now   func() time.Duration // CLOCK_MONOTONIC

	pending atomic.Pointer[gossip.View] // the latest view not yet acted on
	wake    chan struct{}

	mu        sync.Mutex
	prog      program
	loadErr   error
	attachErr map[string]error // by interface, logged once
	ifaces    map[string]int   // attached: interface -> index
	last      *gossip.View
	vips      map[netip.Addr]*vipState
	unseen    map[netip.Addr]bool // routers not yet seen, logged once
	peers     [][6]byte           // the hosts' MACs in the kernel
	closed    bool                // Run has ended: Sync loads nothing again
	// joined: the routed VIPs whose table has been made over a view with
	// the hosts that already serve them (see Held); held, the others.
	joined map[netip.Addr]bool
	held   atomic.Pointer[map[netip.Addr]bool]
	// OnJoined, if set, is called when a VIP is no longer held, with the
	// Spreader's lock held: it must not block.
	OnJoined func()
}

// New returns a Spreader for host self; it loads the program once a VIP
// with routers is served. For grace after a planned move (0: not at all),
// the open connections of the flows that move here go on to the host that
// served them.
func New(self string, grace time.Duration, src Source, log *slog.Logger) *Spreader {
	return &Spreader{self: self, log: log, src: src, load: loadProgram, grace: grace, now: bpf.Monotonic, wake: make(chan struct{}, 1),
		attachErr: map[string]error{}, ifaces: map[string]int{}, vips: map[netip.Addr]*vipState{}, unseen: map[netip.Addr]bool{},
		joined: map[netip.Addr]bool{}}
}

// Held reports whether this host must not take vip's routed flows yet:
// spreading works, vip has routers, and this host has not made vip's
// table over a view with the hosts that already serve it (nor seen that
// none does). A starting host's first table has only itself: were the
// others to send it flows before its own table holds them, the open
// connections of the flows that move to it would find no host to go back
// to, and its stack would reset them. The daemon gossips vip as failing
// here meanwhile.
func (s *Spreader) Held(vip netip.Addr) bool {
	m := s.held.Load()
	return m != nil && (*m)[vip]
}

func (s *Spreader) String() string { return "spread" }

// Run makes the tables from the views ViewChanged hands it, and keeps the
// routers' MACs and the interfaces up to date, until ctx ends; then it
// unloads the program.
func (s *Spreader) Run(ctx context.Context) error {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	defer s.close()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
			s.Sync()
		case <-t.C:
			s.Update(nil)
		}
	}
}

// ViewChanged hands the spreader a new view, for Run: a table over many
// hosts of high weight takes tens of milliseconds to make (BenchmarkTable),
// which the gossip path must not wait for. The re-pointing waits for it
// (see Sync).
func (s *Spreader) ViewChanged(v *gossip.View) {
	s.pending.Store(v)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Spreader) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.prog != nil {
		if err := s.prog.Close(); err != nil {
			s.log.Warn("unload spread program", "error", err)
		}
		s.prog = nil
	}
}

// Sync acts on the latest view ViewChanged handed over, unless Run has
// already. The daemon calls it before it re-points clients here: a router
// re-pointed to this host before its table and the router's MAC are in
// the kernel has its packets go to this host's stack, which resets every
// routed connection another host serves (a host that joins and becomes
// the router's director did so). The pending view is taken under the lock,
// so that Run and Sync never act on an older view after a newer one.
func (s *Spreader) Sync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.pending.Swap(nil); v != nil && !s.closed {
		s.update(v)
	}
}

// Update takes a new view (nil: the same view, after a reload or to look
// at the client table again).
func (s *Spreader) Update(v *gossip.View) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.update(v)
}

func (s *Spreader) update(v *gossip.View) {
	if v != nil {
		s.last = v
	}
	served := s.src.Routed()
	if len(served) > 0 && s.prog == nil && s.loadErr == nil {
		s.open(len(served))
	}
	if s.prog == nil {
		s.held.Store(nil)
		return
	}
	s.attach(served)
	s.setPeers()
	is := map[netip.Addr]bool{}
	for _, sv := range served {
		is[sv.VIP] = true
		s.updateVIP(sv)
	}
	for vip := range s.vips {
		if !is[vip] {
			if err := s.prog.RemoveVIP(vip); err != nil {
				s.log.Warn("stop spreading a VIP", "vip", vip, "error", err)
				continue
			}
			delete(s.vips, vip)
			delete(s.joined, vip)
		}
	}
	s.hold(served)
}

// hold works out which of the served VIPs are held (see Held), and calls
// OnJoined when one no longer is.
func (s *Spreader) hold(served []RoutedVIP) {
	held, released := map[netip.Addr]bool{}, false
	for _, sv := range served {
		if st := s.vips[sv.VIP]; !s.joined[sv.VIP] && s.last != nil && st.made &&
			(slices.ContainsFunc(st.hosts, func(h Host) bool { return h.Name != s.self }) ||
				!slices.ContainsFunc(s.last.Eligible(sv.VIP), func(c gossip.Candidate) bool { return c.Name != s.self })) {
			s.joined[sv.VIP], released = true, true
			s.log.Info("spread table made with the cluster: taking routed flows", "vip", sv.Name)
		}
		if !s.joined[sv.VIP] {
			held[sv.VIP] = true
		}
	}
	s.held.Store(&held)
	if released && s.OnJoined != nil {
		s.OnJoined()
	}
}

// open loads the program; if that fails it says so once, and the routers'
// clients go to their director as they would without spreading.
func (s *Spreader) open(vips int) {
	p, err := s.load(max(vips, 8)) // room for VIPs a reload adds
	if err != nil {
		s.loadErr = err
		s.log.Warn("spreading routed clients unavailable: every client behind a router goes to the host that owns the router's ARP", "error", err)
		return
	}
	s.prog = p
	s.log.Info("spreading routed clients' flows over the hosts", "vips", vips)
}

// updateVIP brings one VIP's table and routers in line.
func (s *Spreader) updateVIP(sv RoutedVIP) {
	st := s.vips[sv.VIP]
	if st == nil {
		st = &vipState{known: map[netip.Addr][6]byte{}}
		s.vips[sv.VIP] = st
	}
	st.served = sv
	hosts := tableHosts(s.last, sv.VIP)
	if !st.made || !slices.Equal(hosts, st.hosts) {
		table := s.table(sv.VIP, hosts, st)
		if err := s.prog.SetTable(sv.VIP, table); err != nil {
			s.log.Warn("cannot update the spread table: routed flows keep the old one", "vip", sv.Name, "error", err)
		} else {
			st.made, st.hosts, st.table = true, hosts, table
			s.log.Debug("spread table updated", "vip", sv.Name, "hosts", len(hosts))
		}
	}
	macs := s.routerMACs(sv, st)
	if !slices.Equal(macs, st.routers) {
		if err := s.prog.SetRouters(sv.VIP, macs); err != nil {
			s.log.Warn("cannot update the spread routers", "vip", sv.Name, "error", err)
			return
		}
		st.routers = macs
	}
}

// table makes vip's table over hosts, with the slots that moved here from
// a live host marked to hand that host its open connections (see withPrev).
func (s *Spreader) table(vip netip.Addr, hosts []Host, st *vipState) []Slot {
	table := Table(vip, hosts, s.self)
	if s.grace <= 0 || table == nil || s.last == nil {
		return table
	}
	live := map[[6]byte]bool{}
	for _, m := range s.last.Members {
		if mac, ok := segmentMAC(s.last, m.Name); ok && m.Name != s.self {
			live[mac] = true
		}
	}
	now := s.now()
	if st.made {
		withPrev(table, st.table, live, now, now+s.grace)
	}
	// A table with no other host (none yet, or only this one: a starting
	// host makes one before gossip brings it the others) does not say
	// who served the others' flows: they served them as the hash over
	// them gives, as for a host that joins. For a host that was really
	// alone, a segment with no socket here then goes to a host that has
	// none either, which sends it back: reset as before, one hop later.
	// A mark still running from an older table stays.
	if !slices.ContainsFunc(st.hosts, func(h Host) bool { return h.Name != s.self }) {
		others := slices.DeleteFunc(slices.Clone(hosts), func(h Host) bool { return h.Name == s.self })
		joined := slices.Clone(table)
		withPrev(joined, Table(vip, others, ""), live, now, now+s.grace)
		for i := range table {
			if table[i].Deadline == 0 {
				table[i] = joined[i]
			}
		}
	}
	return table
}

// setPeers tells the program the hosts' MACs, whose frames to a VIP with
// routers a director sent.
func (s *Spreader) setPeers() {
	var macs [][6]byte
	for m := range s.last.PeerMACs() {
		macs = append(macs, m)
	}
	slices.SortFunc(macs, func(a, b [6]byte) int { return slices.Compare(a[:], b[:]) })
	if slices.Equal(macs, s.peers) {
		return
	}
	if err := s.prog.SetPeers(macs); err != nil {
		s.log.Warn("cannot update the spread program's hosts", "error", err)
		return
	}
	s.peers = macs
}

// routerMACs returns the MACs of sv's routers, as the client table last
// knew them; a router not seen yet is logged once.
func (s *Spreader) routerMACs(sv RoutedVIP, st *vipState) [][6]byte {
	for _, r := range sv.Routers {
		if m, ok := s.src.MAC(sv.VIP, r); ok && unicast(m) {
			st.known[r] = m
		}
	}
	peers := s.last.PeerMACs()
	var macs [][6]byte
	for _, r := range sv.Routers {
		m, ok := st.known[r]
		switch {
		case !ok:
			if !s.unseen[r] {
				s.log.Info("router not seen yet: its traffic is spread once it asks for the VIP", "vip", sv.Name, "router", r)
				s.unseen[r] = true
			}
		case peers[m]:
			// A router at a host's MAC would bounce its own flows.
			s.log.Warn("router has the MAC of a host of the cluster: not spread", "vip", sv.Name, "router", r, "mac", net.HardwareAddr(m[:]).String())
		default:
			if s.unseen[r] {
				s.log.Info("router seen: spreading its traffic", "vip", sv.Name, "router", r, "mac", net.HardwareAddr(m[:]).String())
				delete(s.unseen, r)
			}
			if !slices.Contains(macs, m) {
				macs = append(macs, m)
			}
		}
	}
	slices.SortFunc(macs, func(a, b [6]byte) int { return slices.Compare(a[:], b[:]) })
	for ip := range st.known {
		if !slices.Contains(sv.Routers, ip) {
			delete(st.known, ip)
		}
	}
	return macs
}

// tableHosts returns the hosts eligible for vip in v that say which MAC
// they serve on, sorted by name: every host computes the same list.
func tableHosts(v *gossip.View, vip netip.Addr) []Host {
	var out []Host
	for _, c := range v.Eligible(vip) {
		if mac, ok := segmentMAC(v, c.Name); ok {
			out = append(out, Host{Name: c.Name, Weight: c.Weight, MAC: mac})
		}
	}
	slices.SortFunc(out, func(a, b Host) int { return cmpString(a.Name, b.Name) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// segmentMAC returns the serving MAC of member name, if it is live and
// gossips exactly one (a host with several interfaces does not say which
// is on this segment: it gets no spread flows; see docs/limitations.md).
func segmentMAC(v *gossip.View, name string) ([6]byte, bool) {
	pm, ok := v.Member(name)
	if !ok || !pm.Live() || len(pm.Meta.MACs) != 1 {
		return [6]byte{}, false
	}
	mac, err := net.ParseMAC(pm.Meta.MACs[0])
	if err != nil || len(mac) != 6 || !unicast([6]byte(mac)) {
		return [6]byte{}, false
	}
	return [6]byte(mac), true
}

func unicast(m [6]byte) bool {
	return m[0]&1 == 0 && m != [6]byte{}
}

// attach puts the program on every interface that serves a VIP with
// routers, and takes it off the others. Call with s.mu held.
func (s *Spreader) attach(served []RoutedVIP) {
	want := map[string]bool{}
	for _, sv := range served {
		want[sv.Interface] = true
	}
	for name := range want {
		ifi, err := net.InterfaceByName(name)
		if err == nil && s.ifaces[name] == ifi.Index {
			continue
		}
		if index, ok := s.ifaces[name]; ok { // gone, or made anew
			s.detach(name, index)
		}
		if err == nil {
			err = s.prog.Attach(ifi.Index)
		}
		if err != nil {
			if s.attachErr[name] == nil {
				s.log.Warn("spreading routed clients unavailable on this interface: they all go to the router's director", "interface", name, "error", err)
			}
			s.attachErr[name] = err
			continue
		}
		if s.attachErr[name] != nil {
			s.log.Info("spreading routed clients available on this interface again", "interface", name)
		}
		delete(s.attachErr, name)
		s.ifaces[name] = ifi.Index
	}
	for name, index := range s.ifaces {
		if !want[name] {
			s.detach(name, index)
		}
	}
}

func (s *Spreader) detach(name string, index int) {
	if err := s.prog.Detach(index); err != nil {
		s.log.Warn("take the spread program off an interface", "interface", name, "error", err)
	}
	delete(s.ifaces, name)
}

// Status is the spreading as `arpshare status` shows it.
type Status struct {
	// Configured: a VIP served here has routers. Active: the kernel
	// program is loaded; Error says why not.
	Configured bool              `json:"configured"`
	Active     bool              `json:"active"`
	Error      string            `json:"error,omitempty"`
	Interfaces []string          `json:"interfaces,omitempty"`
	Unattached map[string]string `json:"unattached,omitempty"`
	VIPs       []VIPStatus       `json:"vips,omitempty"`
	// Packets counts packets to VIPs with routers, by outcome.
	Packets map[string]uint64 `json:"packets,omitempty"`
}

// VIPStatus is one VIP's spreading.
type VIPStatus struct {
	VIP     netip.Addr        `json:"vip"`
	Name    string            `json:"name"`
	Hosts   []string          `json:"hosts"`   // the table's hosts
	Routers map[string]string `json:"routers"` // IP -> MAC, "" while not seen
}

// Status reports the spreading's state.
func (s *Spreader) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Configured: len(s.src.Routed()) > 0, Active: s.prog != nil}
	if s.loadErr != nil {
		st.Error = s.loadErr.Error()
	}
	for name := range s.ifaces {
		st.Interfaces = append(st.Interfaces, name)
	}
	slices.Sort(st.Interfaces)
	for name, err := range s.attachErr {
		if st.Unattached == nil {
			st.Unattached = map[string]string{}
		}
		st.Unattached[name] = err.Error()
	}
	for vip, v := range s.vips {
		vs := VIPStatus{VIP: vip, Name: v.served.Name, Hosts: []string{}, Routers: map[string]string{}}
		for _, h := range v.hosts {
			vs.Hosts = append(vs.Hosts, h.Name)
		}
		for _, r := range v.served.Routers {
			vs.Routers[r.String()] = ""
			if m, ok := v.known[r]; ok {
				vs.Routers[r.String()] = net.HardwareAddr(m[:]).String()
			}
		}
		st.VIPs = append(st.VIPs, vs)
	}
	slices.SortFunc(st.VIPs, func(a, b VIPStatus) int { return a.VIP.Compare(b.VIP) })
	if s.prog != nil {
		if o, err := s.prog.Outcomes(); err == nil {
			st.Packets = o
		}
	}
	return st
}

// Summary is the status in one line.
func (st Status) Summary() string {
	switch {
	case !st.Configured:
		return "not configured (no vip.routers)"
	case !st.Active:
		return "UNAVAILABLE: routed clients all go to the router's director: " + st.Error
	}
	return fmt.Sprintf("active on %v, %d packets spread, %d local", st.Interfaces, st.Packets["spread"], st.Packets["local"])
}
