package arp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"

	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/bpf/fastpath"
	"github.com/arpshare/arpshare/internal/clock"
)

// Outcome is what became of one received frame. Every frame gets exactly one;
// they are counted, and become the outcome label of the requests metric.
type Outcome string

// Outcomes of a received frame.
const (
	Answered     Outcome = "answered"       // a request for a VIP from a client this host owns
	NotOwner     Outcome = "not_owner"      // a request for a VIP from another host's client
	Conflict     Outcome = "conflict"       // someone outside the cluster claims a VIP
	PeerAnnounce Outcome = "peer_announce"  // a cluster member announces a VIP
	Reply        Outcome = "reply"          // not a request: nothing to answer
	Foreign      Outcome = "foreign_target" // a request for an address that is not our VIP
	// The sender's MAC (ARP sender hardware address, NDP link-layer
	// option) is broadcast, multicast or zero: no machine has it.
	BadSenderMAC Outcome = "bad_sender_mac"
	// The ARP sender hardware address is not the frame's Ethernet source.
	MACMismatch Outcome = "mac_mismatch"
	// The sender's address is multicast, broadcast or loopback.
	BadSenderIP Outcome = "bad_sender_ip"
	Malformed   Outcome = "malformed" // not a well-formed ARP packet or NDP message
)

// SharedVIP is a VIP a responder answers for, and the policy that shares
// its clients among the hosts.
type SharedVIP struct {
	Address netip.Addr
	Policy  policy.Policy
}

// ResponderConfig configures a Responder.
type ResponderConfig struct {
	Interface string
	// IPv6 makes it answer Neighbor Discovery for IPv6 VIPs instead of ARP
	// for IPv4 ones.
	IPv6  bool
	VIPs  []SharedVIP // the VIPs served on this interface
	Table *ClientTable
	// View is the cluster as this host sees it when the responder starts;
	// SetView follows its changes. Nil answers nobody.
	View   *gossip.View
	Logger *slog.Logger
	// Listen opens the interface for ARP; nil means Listen (a raw socket).
	Listen func(name string) (Conn, net.HardwareAddr, error)
	// ListenNDP opens it for NDP; nil means ListenNDP (an ICMPv6 socket).
	ListenNDP func(name string) (NDPConn, net.HardwareAddr, error)
	// OnOpen runs each time the interface is (re)opened, before any frame is
	// read: host plumbing belongs here, as the interface may be new.
	OnOpen func(name string, mac net.HardwareAddr) error
	// OnClose runs each time the open interface is lost (err says why:
	// the socket's read failed), before the responder tries to reopen it.
	OnClose func(name string, err error)
	// WaitLink, if set, returns before each open once the interface can
	// carry answers, or with an error once ctx ends: the responder does not
	// try a link its caller knows to be down or missing.
	WaitLink func(ctx context.Context, name string) error
	// Retry is how often a missing or down interface is tried again.
	Retry time.Duration
	// FastPath answers the ARP requests (or Neighbor Solicitations) of
	// clients already decided on in the kernel (package fastpath), where
	// the kernel allows it; user space answers the rest, and everything
	// when the kernel refuses. Only with Listen (ListenNDP) nil: the real
	// socket.
	FastPath bool
	// program, if set, is the fast path's program instead of one loaded
	// into the kernel: a test's fake, which may run beside a fake conn.
	program fastProgram
}

// Responder answers ARP (or NDP) for the VIPs of one interface.
type Responder struct {
	cfg   ResponderConfig
	ready chan struct{}
	once  sync.Once

	// snap is everything a frame's decision reads, swapped whole on a
	// change: the reading goroutine takes no lock.
	snap atomic.Pointer[snapshot]
	none counts // frames about no VIP of ours
	// busy is since when (Unix ns) Run's loop works on one thing (a read's
	// frames, opening the interface); 0 while it waits for frames or for
	// the interface. See Busy.
	busy atomic.Int64
	// later sends the race mode's delayed answers while Run runs.
	later *later

	mu       sync.Mutex
	counts   map[netip.Addr]*counts // kept across reloads: counters only grow
	link     link                   // nil while the interface is not open
	mac      net.HardwareAddr
	lastWarn time.Time

	// The kernel fast path: the program while Run runs, and its state
	// while the interface is open (fast.go).
	prog         fastProgram
	kern         atomic.Pointer[kernel]
	attachWarned bool // only Run's goroutine touches it
}

// snapshot is the immutable state a decision reads.
type snapshot struct {
	vips  []servedVIP
	view  *gossip.View
	peers map[[6]byte]bool // the cluster members' serving MACs
}

type servedVIP struct {
	SharedVIP
	counts *counts
}

// find returns the index of addr among the VIPs, or -1.
func (s *snapshot) find(addr netip.Addr) int {
	for i := range s.vips {
		if s.vips[i].Address == addr {
			return i
		}
	}
	return -1
}

// find4 is find for an IPv4 address as 4 bytes of a frame.
func (s *snapshot) find4(b []byte) int {
	a := netip.AddrFrom4([4]byte(b))
	return s.find(a)
}

func (s *snapshot) addrs() []netip.Addr {
	out := make([]netip.Addr, len(s.vips))
	for i, v := range s.vips {
		out[i] = v.Address
	}
	return out
}

// answer reports whether this host answers client for VIP i, and after how
// long: the view decides, so whatever keeps a host from answering (no
// quorum, not a member) travels with it.
func (s *snapshot) answer(i int, client netip.Addr) (bool, time.Duration) {
	v := s.vips[i]
	if !v.Policy.Answers(s.view, v.Address, client) {
		return false, 0
	}
	return true, v.Policy.Delay()
}

// counts are one VIP's counters, bumped without a lock.
type counts struct {
	frames                       [len(outcomes)]atomic.Uint64
	replies, repoints, announces atomic.Uint64
	// The VIP's counters in the kernel fast path, and what they held when
	// its program went away: answered, not owner.
	slot       int
	kernelBase [2]atomic.Uint64
}

var outcomes = [...]Outcome{Answered, NotOwner, Conflict, PeerAnnounce, Reply, Foreign, BadSenderMAC, MACMismatch, BadSenderIP, Malformed}

func outcomeIndex(o Outcome) int {
	switch o {
	case Answered:
		return 0
	case NotOwner:
		return 1
	case Conflict:
		return 2
	case PeerAnnounce:
		return 3
	case Reply:
		return 4
	case Foreign:
		return 5
	case BadSenderMAC:
		return 6
	case MACMismatch:
		return 7
	case BadSenderIP:
		return 8
	}
	return len(outcomes) - 1
}

// count counts one frame's outcome, for VIP i (-1: none).
func (r *Responder) count(s *snapshot, i int, o Outcome) {
	c := &r.none
	if i >= 0 {
		c = s.vips[i].counts
	}
	c.frames[outcomeIndex(o)].Add(1)
}

// countsOf returns vip's counters, making them if need be.
func (r *Responder) countsOf(vip netip.Addr) *counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.counts[vip]
	if !ok {
		c = &counts{slot: len(r.counts)}
		r.counts[vip] = c
	}
	return c
}

// Key says what a count is about: the VIP concerned (the zero Addr for
// frames about no VIP of ours) and the outcome.
type Key struct {
	VIP     netip.Addr
	Outcome Outcome
}

// Stats counts what a responder saw and sent.
type Stats struct {
	Frames    map[Key]uint64        // received frames by VIP and outcome
	Replies   map[netip.Addr]uint64 // ARP replies sent, by VIP
	Repoints  map[netip.Addr]uint64 // targeted requests (ARP) or solicitations (NDP) sent, by VIP
	Announces map[netip.Addr]uint64 // broadcast gratuitous ARP sent, by VIP
	// Kernel is the part of Frames (answered and not_owner) that the
	// kernel fast path decided on; its answers count in Replies too.
	Kernel map[Key]uint64
}

// NewResponder returns a responder; Run starts it.
func NewResponder(cfg ResponderConfig) *Responder {
	// The kernel fast path runs beside the real raw socket only: a test's
	// fake conn must never put a program on a real interface. A fake
	// program (ResponderConfig.program) puts none.
	real := cfg.Listen == nil
	if cfg.IPv6 {
		real = cfg.ListenNDP == nil
	}
	cfg.FastPath = cfg.FastPath && (real || cfg.program != nil)
	if cfg.Listen == nil {
		cfg.Listen = Listen
	}
	if cfg.ListenNDP == nil {
		cfg.ListenNDP = ListenNDP
	}
	if cfg.Retry == 0 {
		cfg.Retry = time.Second
	}
	r := &Responder{cfg: cfg, ready: make(chan struct{}), counts: map[netip.Addr]*counts{}, later: newLater()}
	r.none.slot = -1 // frames about no VIP: never decided in the kernel
	r.snap.Store(&snapshot{view: cfg.View, peers: cfg.View.PeerMACs()})
	r.SetVIPs(cfg.VIPs)
	return r
}

// SetView gives the responder a new view of the cluster.
func (r *Responder) SetView(v *gossip.View) {
	peers := v.PeerMACs()
	r.mu.Lock()
	defer r.mu.Unlock()
	s := *r.snap.Load()
	s.view, s.peers = v, peers
	r.snap.Store(&s)
	r.pauseFastPath()
}

// link is one open interface, for one protocol.
type link interface {
	// serve reads messages and hands each to h until the link fails or
	// closes.
	serve(h handler) error
	// repoint tells one client that vip is at mac; announce tells everyone.
	repoint(mac net.HardwareAddr, vip netip.Addr, c Client) error
	announce(mac net.HardwareAddr, vip netip.Addr) error
	// setVIPs follows a change of the VIPs served.
	setVIPs(old, new []netip.Addr)
	Close() error
}

// handler takes the messages a link reads: it decides on each, counts it,
// and sends the answer on the link. The Responder is the handler; the links'
// read loops know nothing else of it.
type handler interface {
	handleARP(l *arpLink, frame []byte, now time.Time)
	// readARP follows each read of one or more frames.
	readARP()
	handleNDP(l *ndpLink, msg []byte, hops int, src netip.Addr, now time.Time)
}

func (r *Responder) open() (link, net.HardwareAddr, error) {
	if r.cfg.IPv6 {
		c, mac, err := r.cfg.ListenNDP(r.cfg.Interface)
		if err != nil {
			return nil, nil, err
		}
		l := &ndpLink{conn: c, mac: mac, log: r.cfg.Logger.With("interface", r.cfg.Interface)}
		if ifi, err := net.InterfaceByName(r.cfg.Interface); err == nil {
			l.index = ifi.Index
		}
		l.setVIPs(nil, r.snap.Load().addrs())
		return l, mac, nil
	}
	c, mac, err := r.cfg.Listen(r.cfg.Interface)
	if err != nil {
		return nil, nil, err
	}
	return &arpLink{conn: c, mac: mac, reply: make([]byte, arpFrameLen)}, mac, nil
}

// SetVIPs changes the VIPs served on the interface, or their modes (on a
// config reload).
func (r *Responder) SetVIPs(vips []SharedVIP) {
	served := make([]servedVIP, len(vips))
	for i, v := range vips {
		served[i] = servedVIP{SharedVIP: v, counts: r.countsOf(v.Address)}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.snap.Load()
	s := *old
	s.vips = served
	r.snap.Store(&s)
	r.pauseFastPath()
	if r.link != nil {
		r.link.setVIPs(old.addrs(), s.addrs())
	}
}

func (r *Responder) String() string {
	if r.cfg.IPv6 {
		return "ndp responder on " + r.cfg.Interface
	}
	return "arp responder on " + r.cfg.Interface
}

// Ready is closed once the interface has been opened the first time.
func (r *Responder) Ready() <-chan struct{} { return r.ready }

// Busy returns since when the responder's loop has been working on one
// thing (the frames of one read, opening its interface), or the zero time
// while it waits: for a watchdog, a loop busy for long is stuck, one that
// waits for frames on a quiet segment is not.
func (r *Responder) Busy() time.Time {
	if b := r.busy.Load(); b != 0 {
		return time.Unix(0, b)
	}
	return time.Time{}
}

// Run serves the interface until ctx ends, reopening it whenever it is lost.
func (r *Responder) Run(ctx context.Context) error {
	log := r.cfg.Logger.With("interface", r.cfg.Interface)
	var delayed sync.WaitGroup
	defer delayed.Wait()
	delayed.Go(func() { r.later.run(ctx) })
	if p := r.loadFastPath(); p != nil {
		r.mu.Lock()
		r.prog = p
		r.mu.Unlock()
		defer func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.foldKernelCounts(p)
			r.prog = nil
			if err := p.Close(); err != nil {
				log.Warn("kernel fast path: unload", "error", err)
			}
		}()
	}
	var lastErr string
	for ctx.Err() == nil {
		if r.cfg.WaitLink != nil && r.cfg.WaitLink(ctx, r.cfg.Interface) != nil {
			break
		}
		r.busy.Store(time.Now().UnixNano())
		conn, mac, err := r.open()
		if err == nil && r.cfg.OnOpen != nil {
			if err = r.cfg.OnOpen(r.cfg.Interface, mac); err != nil {
				conn.Close()
			}
		}
		r.busy.Store(0)
		if err != nil {
			if err.Error() != lastErr {
				log.Warn("interface not usable, waiting for it", "error", err)
				lastErr = err.Error()
			}
			if !clock.Sleep(ctx, r.cfg.Retry) {
				break
			}
			continue
		}
		lastErr = ""
		log.Info("answering", "protocol", map[bool]string{false: "ARP", true: "NDP"}[r.cfg.IPv6], "mac", mac.String(), "vip_addresses", r.snap.Load().addrs())
		r.mu.Lock()
		r.link, r.mac = conn, mac
		r.mu.Unlock()
		r.once.Do(func() { close(r.ready) })

		stop := context.AfterFunc(ctx, func() { conn.Close() })
		detach := r.attachFastPath(ctx, r.prog, mac)
		err = conn.serve(r)
		detach()
		stop()

		r.mu.Lock()
		r.link = nil
		r.mu.Unlock()
		conn.Close()
		if ctx.Err() != nil {
			break
		}
		log.Warn("interface lost, reopening", "error", err)
		if r.cfg.OnClose != nil {
			r.cfg.OnClose(r.cfg.Interface, err)
		}
		if !clock.Sleep(ctx, r.cfg.Retry) {
			break
		}
	}
	return nil
}

// arpLink is an interface open for ARP.
type arpLink struct {
	conn  Conn
	mac   net.HardwareAddr
	reply []byte // the answer being sent; only the reading goroutine uses it
}

func (l *arpLink) Close() error                  { return l.conn.Close() }
func (l *arpLink) setVIPs(old, new []netip.Addr) {}

// readBatch is how many frames one read brings in at most.
const readBatch = 32

func (l *arpLink) serve(h handler) error {
	if br, ok := l.conn.(BatchReader); ok {
		bufs, sizes := make([][]byte, readBatch), make([]int, readBatch)
		for i := range bufs {
			bufs[i] = make([]byte, 1514)
		}
		for {
			n, err := br.ReadBatch(bufs, sizes)
			if err != nil {
				return err
			}
			now := time.Now()
			for i := range n {
				h.handleARP(l, bufs[i][:sizes[i]], now)
			}
			h.readARP()
		}
	}
	buf := make([]byte, 1514)
	for {
		n, err := l.conn.ReadFrame(buf)
		if err != nil {
			return err
		}
		h.handleARP(l, buf[:n], time.Now())
		h.readARP()
	}
}

// handleARP decides on one frame read on l, and answers it on l.
func (r *Responder) handleARP(l *arpLink, frame []byte, now time.Time) {
	r.busy.CompareAndSwap(0, now.UnixNano()) // until readARP
	mac := [6]byte(l.mac)
	s := r.snap.Load()
	v := r.decideARP(s, frame, mac, now)
	r.count(s, v.vip, v.out)
	if k := r.kern.Load(); k != nil && (v.out == Answered || v.out == NotOwner) {
		r.decided(k, s, v.vip, v, frame)
	}
	if !v.send {
		return
	}
	arpReply(l.reply, frame, mac)
	if !UnicastMAC(l.reply[:6]) {
		return // the decision vets the sender; this is the last guard
	}
	if v.delay > 0 {
		reply := slices.Clone(l.reply)
		r.sendLater(now.Add(v.delay), s, v.vip, func() error { return l.conn.WriteFrame(reply, reply[:6]) })
		return
	}
	r.sent(s, v.vip, l.conn.WriteFrame(l.reply, l.reply[:6]))
}

// sendLater sends an answer for VIP i at due, on the responder's own
// scheduler; an answer it has no room for is logged as not sent.
func (r *Responder) sendLater(due time.Time, s *snapshot, i int, send func() error) {
	if !r.later.add(due, func() { r.sent(s, i, send()) }) {
		r.sent(s, i, errLaterFull)
	}
}

// errLaterFull: too many delayed answers wait already.
var errLaterFull = errors.New("too many delayed answers waiting: dropped")

// sent counts an answer sent for VIP i, or logs why it was not: after a
// delay, the link may have been closed meanwhile.
func (r *Responder) sent(s *snapshot, i int, err error) {
	if err != nil {
		r.cfg.Logger.Debug("send answer", "interface", r.cfg.Interface, "vip_address", s.vips[i].Address, "error", err)
		return
	}
	s.vips[i].counts.replies.Add(1)
}

func (r *Responder) warnConflict(vip netip.Addr, mac net.HardwareAddr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.lastWarn) < 10*time.Second {
		return
	}
	r.lastWarn = time.Now()
	r.cfg.Logger.Warn("another machine claims a VIP (logged at most every 10s)",
		"interface", r.cfg.Interface, "vip_address", vip, "mac", mac.String())
}

func frameFor(op arp.Operation, srcMAC net.HardwareAddr, srcIP netip.Addr, dstMAC net.HardwareAddr, dstIP netip.Addr, ethDst net.HardwareAddr) ([]byte, error) {
	p, err := arp.NewPacket(op, srcMAC, srcIP, dstMAC, dstIP)
	if err != nil {
		return nil, err
	}
	pb, err := p.MarshalBinary()
	if err != nil {
		return nil, err
	}
	f := ethernet.Frame{Destination: ethDst, Source: srcMAC, EtherType: ethernet.EtherTypeARP, Payload: pb}
	return f.MarshalBinary()
}

// ErrNotOpen is returned when the interface is not open right now.
var ErrNotOpen = errors.New("interface not open")

// ErrNotUnicast is returned for a client whose MAC no single machine has:
// a packet to it would reach the whole segment.
var ErrNotUnicast = errors.New("client MAC is not unicast")

// Repoint tells client that vip is now at this interface's MAC with the one
// packet every neighbour implementation must honour, a request addressed to
// the client from the VIP: for ARP "who has <client>? tell <VIP>" (sender
// MAC this interface, Ethernet destination the client), for NDP a Neighbor
// Solicitation for the client's address from the VIP with this interface's
// MAC as source link-layer option. RFC 826 and RFC 4861 7.2.3 make the
// receiver create or update its entry for the sender; Linux does so with
// override, within its locktime and with drop_gratuitous_arp or
// drop_unsolicited_na set, which it does not for a gratuitous ARP or an
// unsolicited advertisement (docs/design.md, "Re-pointing"). The client
// answers the request, which confirms it is there and protects it in the
// table (ClientTable.Confirm).
func (r *Responder) Repoint(vip netip.Addr, c Client) error {
	if !UnicastMAC(c.MAC) || !unicastIP(c.IP) {
		return fmt.Errorf("repoint %s at %s on %s: %w", c.IP, c.MAC, r.cfg.Interface, ErrNotUnicast)
	}
	r.mu.Lock()
	l, mac := r.link, r.mac
	r.mu.Unlock()
	if l == nil {
		return fmt.Errorf("repoint %s on %s: %w", c.IP, r.cfg.Interface, ErrNotOpen)
	}
	if err := l.repoint(mac, vip, c); err != nil {
		return fmt.Errorf("repoint %s on %s: %w", c.IP, r.cfg.Interface, err)
	}
	r.countsOf(vip).repoints.Add(1)
	r.cfg.Table.Asked(vip, c.IP, time.Now())
	return nil
}

// Announce tells every machine on the segment that vip is at this
// interface's MAC: a broadcast gratuitous ARP, or an unsolicited Neighbor
// Advertisement to all nodes.
func (r *Responder) Announce(vip netip.Addr) error {
	r.mu.Lock()
	l, mac := r.link, r.mac
	r.mu.Unlock()
	if l == nil {
		return fmt.Errorf("announce %s on %s: %w", vip, r.cfg.Interface, ErrNotOpen)
	}
	if err := l.announce(mac, vip); err != nil {
		return fmt.Errorf("announce %s on %s: %w", vip, r.cfg.Interface, err)
	}
	r.countsOf(vip).announces.Add(1)
	return nil
}

var zeroMAC = net.HardwareAddr{0, 0, 0, 0, 0, 0}

func (l *arpLink) repoint(mac net.HardwareAddr, vip netip.Addr, c Client) error {
	f, err := frameFor(arp.OperationRequest, mac, vip, zeroMAC, c.IP, c.MAC)
	if err != nil {
		return err
	}
	return l.conn.WriteFrame(f, c.MAC)
}

func (l *arpLink) announce(mac net.HardwareAddr, vip netip.Addr) error {
	f, err := frameFor(arp.OperationRequest, mac, vip, zeroMAC, vip, ethernet.Broadcast)
	if err != nil {
		return err
	}
	return l.conn.WriteFrame(f, ethernet.Broadcast)
}

// Reopen closes the interface's socket, if one is open, so that the
// responder opens the interface again: for a caller that knows the socket
// is on an interface that is gone or renamed (an NDP socket is not told).
func (r *Responder) Reopen() {
	r.mu.Lock()
	l := r.link
	r.mu.Unlock()
	if l != nil {
		l.Close()
	}
}

// MAC returns the interface's MAC while it is open, or nil.
func (r *Responder) MAC() net.HardwareAddr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.link == nil {
		return nil
	}
	return r.mac
}

// Stats returns the responder's counts; a count that is zero is left out.
func (r *Responder) Stats() Stats {
	st := Stats{Frames: map[Key]uint64{}, Replies: map[netip.Addr]uint64{}, Repoints: map[netip.Addr]uint64{}, Announces: map[netip.Addr]uint64{}, Kernel: map[Key]uint64{}}
	add := func(vip netip.Addr, c *counts) {
		kernel := [2]uint64{c.kernelBase[0].Load(), c.kernelBase[1].Load()}
		if r.prog != nil && c.slot >= 0 && c.slot < fastpath.MaxSlots {
			if a, n, err := r.prog.Counts(uint8(c.slot)); err == nil {
				kernel[0] += a
				kernel[1] += n
			}
		}
		for i, o := range []Outcome{Answered, NotOwner} {
			if kernel[i] > 0 {
				st.Kernel[Key{vip, o}] = kernel[i]
			}
		}
		for i, o := range outcomes {
			n := c.frames[i].Load()
			if i < 2 {
				n += kernel[i] // outcomes start with answered, not owner
			}
			if n > 0 {
				st.Frames[Key{vip, o}] = n
			}
		}
		if n := c.replies.Load() + kernel[0]; n > 0 {
			st.Replies[vip] = n
		}
		if n := c.repoints.Load(); n > 0 {
			st.Repoints[vip] = n
		}
		if n := c.announces.Load(); n > 0 {
			st.Announces[vip] = n
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	add(netip.Addr{}, &r.none)
	for vip, c := range r.counts {
		add(vip, c)
	}
	return st
}
