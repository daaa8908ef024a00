package arp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
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
	Malformed    Outcome = "malformed"      // not a well-formed ARP packet or NDP message
)

// Ownership is what the responder needs from the cluster view.
type Ownership interface {
	// Answer reports whether this host answers client for vip, and after
	// how long (race mode answers after a random delay).
	Answer(vip, client netip.Addr) (bool, time.Duration)
	// IsPeer reports whether mac belongs to a host of the cluster.
	IsPeer(mac net.HardwareAddr) bool
}

// ResponderConfig configures a Responder.
type ResponderConfig struct {
	Interface string
	// IPv6 makes it answer Neighbor Discovery for IPv6 VIPs instead of ARP
	// for IPv4 ones.
	IPv6      bool
	VIPs      []netip.Addr // the VIPs served on this interface
	Table     *ClientTable
	Ownership Ownership
	Logger    *slog.Logger
	// Listen opens the interface for ARP; nil means Listen (a raw socket).
	Listen func(name string) (Conn, net.HardwareAddr, error)
	// ListenNDP opens it for NDP; nil means ListenNDP (an ICMPv6 socket).
	ListenNDP func(name string) (NDPConn, net.HardwareAddr, error)
	// OnOpen runs each time the interface is (re)opened, before any frame is
	// read: host plumbing belongs here, as the interface may be new.
	OnOpen func(name string, mac net.HardwareAddr) error
	// Retry is how often a missing or down interface is tried again.
	Retry time.Duration
}

// Responder answers ARP (or NDP) for the VIPs of one interface.
type Responder struct {
	cfg   ResponderConfig
	ready chan struct{}
	once  sync.Once

	vips atomic.Pointer[[]netip.Addr]

	mu       sync.Mutex
	link     link // nil while the interface is not open
	mac      net.HardwareAddr
	stats    Stats
	lastWarn time.Time
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
}

func newStats() Stats {
	return Stats{Frames: map[Key]uint64{}, Replies: map[netip.Addr]uint64{}, Repoints: map[netip.Addr]uint64{}, Announces: map[netip.Addr]uint64{}}
}

func (r *Responder) count(f func(*Stats)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(&r.stats)
}

// NewResponder returns a responder; Run starts it.
func NewResponder(cfg ResponderConfig) *Responder {
	if cfg.Listen == nil {
		cfg.Listen = Listen
	}
	if cfg.ListenNDP == nil {
		cfg.ListenNDP = ListenNDP
	}
	if cfg.Retry == 0 {
		cfg.Retry = time.Second
	}
	r := &Responder{cfg: cfg, ready: make(chan struct{}), stats: newStats()}
	r.SetVIPs(cfg.VIPs)
	return r
}

// link is one open interface, for one protocol.
type link interface {
	// serve reads and handles messages until the link fails or closes.
	serve(r *Responder) error
	// repoint tells one client that vip is at mac; announce tells everyone.
	repoint(mac net.HardwareAddr, vip netip.Addr, c Client) error
	announce(mac net.HardwareAddr, vip netip.Addr) error
	// setVIPs follows a change of the VIPs served.
	setVIPs(old, new []netip.Addr)
	Close() error
}

func (r *Responder) open() (link, net.HardwareAddr, error) {
	if r.cfg.IPv6 {
		c, mac, err := r.cfg.ListenNDP(r.cfg.Interface)
		if err != nil {
			return nil, nil, err
		}
		l := &ndpLink{conn: c, mac: mac}
		if ifi, err := net.InterfaceByName(r.cfg.Interface); err == nil {
			l.index = ifi.Index
		}
		l.setVIPs(nil, *r.vips.Load())
		return l, mac, nil
	}
	c, mac, err := r.cfg.Listen(r.cfg.Interface)
	if err != nil {
		return nil, nil, err
	}
	return &arpLink{conn: c, mac: mac}, mac, nil
}

// SetVIPs changes the VIPs served on the interface (on a config reload).
func (r *Responder) SetVIPs(vips []netip.Addr) {
	vips = slices.Clone(vips)
	old := r.vips.Swap(&vips)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.link != nil && old != nil {
		r.link.setVIPs(*old, vips)
	}
}

func (r *Responder) String() string {
	if r.cfg.IPv6 {
		return "ndp responder on " + r.cfg.Interface
	}
	return "arp responder on " + r.cfg.Interface
}

// Interface returns the interface's name.
func (r *Responder) Interface() string { return r.cfg.Interface }

// Ready is closed once the interface has been opened the first time.
func (r *Responder) Ready() <-chan struct{} { return r.ready }

// Run serves the interface until ctx ends, reopening it whenever it is lost.
func (r *Responder) Run(ctx context.Context) error {
	log := r.cfg.Logger.With("interface", r.cfg.Interface)
	var lastErr string
	for ctx.Err() == nil {
		conn, mac, err := r.open()
		if err == nil && r.cfg.OnOpen != nil {
			if err = r.cfg.OnOpen(r.cfg.Interface, mac); err != nil {
				conn.Close()
			}
		}
		if err != nil {
			if err.Error() != lastErr {
				log.Warn("interface not usable, waiting for it", "error", err)
				lastErr = err.Error()
			}
			if !sleep(ctx, r.cfg.Retry) {
				break
			}
			continue
		}
		lastErr = ""
		log.Info("answering", "protocol", map[bool]string{false: "ARP", true: "NDP"}[r.cfg.IPv6], "mac", mac.String(), "vips", *r.vips.Load())
		r.mu.Lock()
		r.link, r.mac = conn, mac
		r.mu.Unlock()
		r.once.Do(func() { close(r.ready) })

		stop := context.AfterFunc(ctx, func() { conn.Close() })
		err = conn.serve(r)
		stop()

		r.mu.Lock()
		r.link = nil
		r.mu.Unlock()
		conn.Close()
		if ctx.Err() != nil {
			break
		}
		log.Warn("interface lost, reopening", "error", err)
		if !sleep(ctx, r.cfg.Retry) {
			break
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// arpLink is an interface open for ARP.
type arpLink struct {
	conn Conn
	mac  net.HardwareAddr
}

func (l *arpLink) Close() error                  { return l.conn.Close() }
func (l *arpLink) setVIPs(old, new []netip.Addr) {}

func (l *arpLink) serve(r *Responder) error {
	buf := make([]byte, 1514)
	for {
		n, err := l.conn.ReadFrame(buf)
		if err != nil {
			return err
		}
		out, vip, reply, dst, delay := r.handle(buf[:n], l.mac, time.Now())
		r.answer(out, vip, delay, reply != nil, func() error { return l.conn.WriteFrame(reply, dst) })
	}
}

// answer counts one message's outcome and sends its answer, if any, at once
// or after delay.
func (r *Responder) answer(out Outcome, vip netip.Addr, delay time.Duration, send bool, write func() error) {
	r.count(func(s *Stats) { s.Frames[Key{vip, out}]++ })
	if !send {
		return
	}
	do := func() {
		if err := write(); err != nil {
			// After a delay, the link may have been closed meanwhile.
			r.cfg.Logger.Debug("send answer", "interface", r.cfg.Interface, "vip", vip, "error", err)
			return
		}
		r.count(func(s *Stats) { s.Replies[vip]++ })
	}
	if delay > 0 {
		time.AfterFunc(delay, do)
		return
	}
	do()
}

// handle decides what to do with one frame: the outcome, the VIP concerned
// (if any), and the frame to send back (nil for none) with its Ethernet
// destination and delay.
func (r *Responder) handle(frame []byte, mac net.HardwareAddr, now time.Time) (Outcome, netip.Addr, []byte, net.HardwareAddr, time.Duration) {
	var none netip.Addr
	var f ethernet.Frame
	if err := f.UnmarshalBinary(frame); err != nil || f.EtherType != ethernet.EtherTypeARP {
		return Malformed, none, nil, nil, 0
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(f.Payload); err != nil ||
		p.HardwareType != 1 || p.ProtocolType != uint16(ethernet.EtherTypeIPv4) ||
		p.HardwareAddrLength != 6 || p.IPLength != 4 {
		return Malformed, none, nil, nil, 0
	}

	vips := *r.vips.Load()
	if slices.Contains(vips, p.SenderIP) && !bytes.Equal(p.SenderHardwareAddr, mac) {
		if r.cfg.Ownership.IsPeer(p.SenderHardwareAddr) {
			return PeerAnnounce, p.SenderIP, nil, nil, 0
		}
		r.warnConflict(p.SenderIP, p.SenderHardwareAddr)
		return Conflict, p.SenderIP, nil, nil, 0
	}
	if p.Operation != arp.OperationRequest {
		// A reply to the VIP answers this host's re-pointing request (the
		// kernel never asks from the VIP): it confirms the client is there.
		if slices.Contains(vips, p.TargetIP) && !p.SenderIP.IsUnspecified() {
			r.cfg.Table.Learn(p.TargetIP, p.SenderIP, p.SenderHardwareAddr, now)
		}
		return Reply, none, nil, nil, 0
	}
	if !slices.Contains(vips, p.TargetIP) {
		return Foreign, none, nil, nil, 0
	}
	vip, client := p.TargetIP, p.SenderIP
	// An unspecified sender is a duplicate-address probe for the VIP. It
	// teaches nothing, but one host must answer it so that whoever probes
	// learns the address is taken; ownership of 0.0.0.0 picks that host.
	if !client.IsUnspecified() {
		r.cfg.Table.Learn(vip, client, p.SenderHardwareAddr, now)
	}
	answer, delay := r.cfg.Ownership.Answer(vip, client)
	if !answer {
		return NotOwner, vip, nil, nil, 0
	}
	reply, err := frameFor(arp.OperationReply, mac, vip, p.SenderHardwareAddr, client, f.Source)
	if err != nil {
		return Malformed, none, nil, nil, 0
	}
	return Answered, vip, reply, f.Source, delay
}

func (r *Responder) warnConflict(vip netip.Addr, mac net.HardwareAddr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.lastWarn) < 10*time.Second {
		return
	}
	r.lastWarn = time.Now()
	r.cfg.Logger.Warn("another machine claims a VIP (logged at most every 10s)",
		"interface", r.cfg.Interface, "vip", vip, "mac", mac.String())
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
// answers the request, which confirms it is there.
func (r *Responder) Repoint(vip netip.Addr, c Client) error {
	r.mu.Lock()
	l, mac := r.link, r.mac
	r.mu.Unlock()
	if l == nil {
		return fmt.Errorf("repoint %s on %s: %w", c.IP, r.cfg.Interface, ErrNotOpen)
	}
	if err := l.repoint(mac, vip, c); err != nil {
		return fmt.Errorf("repoint %s on %s: %w", c.IP, r.cfg.Interface, err)
	}
	r.count(func(s *Stats) { s.Repoints[vip]++ })
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
	r.count(func(s *Stats) { s.Announces[vip]++ })
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

// MAC returns the interface's MAC while it is open, or nil.
func (r *Responder) MAC() net.HardwareAddr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.link == nil {
		return nil
	}
	return r.mac
}

// Stats returns a copy of the responder's counts.
func (r *Responder) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Stats{Frames: maps.Clone(r.stats.Frames), Replies: maps.Clone(r.stats.Replies),
		Repoints: maps.Clone(r.stats.Repoints), Announces: maps.Clone(r.stats.Announces)}
}
