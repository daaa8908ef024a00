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
// they are counted, and later become a metric label.
type Outcome string

// Outcomes of a received frame.
const (
	Answered  Outcome = "answered"  // a request for a VIP from a client this host owns
	NotOwner  Outcome = "not_owner" // a request for a VIP from another host's client
	Conflict  Outcome = "conflict"  // someone outside the cluster claims a VIP
	Announce  Outcome = "peer_announce"
	Reply     Outcome = "reply"          // not a request: nothing to answer
	Foreign   Outcome = "foreign_target" // a request for an address that is not our VIP
	Malformed Outcome = "malformed"      // not a well-formed Ethernet/IPv4 ARP packet
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
	VIPs      []netip.Addr // the VIPs served on this interface
	Table     *ClientTable
	Ownership Ownership
	Logger    *slog.Logger
	// Listen opens the interface; nil means Listen (a raw socket).
	Listen func(name string) (Conn, net.HardwareAddr, error)
	// OnOpen runs each time the interface is (re)opened, before any frame is
	// read: host plumbing belongs here, as the interface may be new.
	OnOpen func(name string, mac net.HardwareAddr) error
	// Retry is how often a missing or down interface is tried again.
	Retry time.Duration
}

// Responder answers ARP for the VIPs of one interface.
type Responder struct {
	cfg   ResponderConfig
	ready chan struct{}
	once  sync.Once

	vips atomic.Pointer[[]netip.Addr]

	mu       sync.Mutex
	conn     Conn
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
	Repoints  map[netip.Addr]uint64 // unicast gratuitous ARP sent, by VIP
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
	if cfg.Retry == 0 {
		cfg.Retry = time.Second
	}
	r := &Responder{cfg: cfg, ready: make(chan struct{}), stats: newStats()}
	r.SetVIPs(cfg.VIPs)
	return r
}

// SetVIPs changes the VIPs served on the interface (on a config reload).
func (r *Responder) SetVIPs(vips []netip.Addr) {
	vips = slices.Clone(vips)
	r.vips.Store(&vips)
}

func (r *Responder) String() string { return "arp responder on " + r.cfg.Interface }

// Ready is closed once the interface has been opened the first time.
func (r *Responder) Ready() <-chan struct{} { return r.ready }

// Run serves the interface until ctx ends, reopening it whenever it is lost.
func (r *Responder) Run(ctx context.Context) error {
	log := r.cfg.Logger.With("interface", r.cfg.Interface)
	var lastErr string
	for ctx.Err() == nil {
		conn, mac, err := r.cfg.Listen(r.cfg.Interface)
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
		log.Info("answering ARP", "mac", mac.String(), "vips", *r.vips.Load())
		r.mu.Lock()
		r.conn, r.mac = conn, mac
		r.mu.Unlock()
		r.once.Do(func() { close(r.ready) })

		err = r.serve(ctx, conn, mac)

		r.mu.Lock()
		r.conn = nil
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

func (r *Responder) serve(ctx context.Context, conn Conn, mac net.HardwareAddr) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	buf := make([]byte, 1514)
	for {
		n, err := conn.ReadFrame(buf)
		if err != nil {
			return err
		}
		out, vip, reply, dst, delay := r.handle(buf[:n], mac, time.Now())
		send := func() {
			if err := conn.WriteFrame(reply, dst); err != nil {
				// After a delay, the conn may have been closed meanwhile.
				r.cfg.Logger.Debug("send ARP reply", "interface", r.cfg.Interface, "client", dst.String(), "error", err)
				return
			}
			r.count(func(s *Stats) { s.Replies[vip]++ })
		}
		switch {
		case reply == nil:
		case delay > 0:
			time.AfterFunc(delay, send)
		default:
			send()
		}
		r.count(func(s *Stats) { s.Frames[Key{vip, out}]++ })
	}
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
			return Announce, p.SenderIP, nil, nil, 0
		}
		r.warnConflict(p)
		return Conflict, p.SenderIP, nil, nil, 0
	}
	if p.Operation != arp.OperationRequest {
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

func (r *Responder) warnConflict(p arp.Packet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.lastWarn) < 10*time.Second {
		return
	}
	r.lastWarn = time.Now()
	r.cfg.Logger.Warn("another machine claims a VIP (logged at most every 10s)",
		"interface", r.cfg.Interface, "vip", p.SenderIP, "mac", p.SenderHardwareAddr.String())
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

// Repoint sends client a unicast gratuitous ARP for vip with this interface's
// MAC. Linux takes a gratuitous ARP even within its neighbour locktime, where
// it would ignore a plain reply, and updates an existing entry only: a client
// that never asked for the VIP learns nothing.
func (r *Responder) Repoint(vip netip.Addr, c Client) error {
	r.mu.Lock()
	conn, mac := r.conn, r.mac
	r.mu.Unlock()
	if conn == nil {
		return fmt.Errorf("repoint %s on %s: %w", c.IP, r.cfg.Interface, ErrNotOpen)
	}
	zero := net.HardwareAddr{0, 0, 0, 0, 0, 0}
	f, err := frameFor(arp.OperationRequest, mac, vip, zero, vip, c.MAC)
	if err != nil {
		return fmt.Errorf("repoint %s on %s: %w", c.IP, r.cfg.Interface, err)
	}
	if err := conn.WriteFrame(f, c.MAC); err != nil {
		return fmt.Errorf("repoint %s on %s: %w", c.IP, r.cfg.Interface, err)
	}
	r.count(func(s *Stats) { s.Repoints[vip]++ })
	return nil
}

// Announce broadcasts a gratuitous ARP for vip with this interface's MAC:
// every machine on the segment that has the VIP cached moves to this host.
func (r *Responder) Announce(vip netip.Addr) error {
	r.mu.Lock()
	conn, mac := r.conn, r.mac
	r.mu.Unlock()
	if conn == nil {
		return fmt.Errorf("announce %s on %s: %w", vip, r.cfg.Interface, ErrNotOpen)
	}
	zero := net.HardwareAddr{0, 0, 0, 0, 0, 0}
	f, err := frameFor(arp.OperationRequest, mac, vip, zero, vip, ethernet.Broadcast)
	if err == nil {
		err = conn.WriteFrame(f, ethernet.Broadcast)
	}
	if err != nil {
		return fmt.Errorf("announce %s on %s: %w", vip, r.cfg.Interface, err)
	}
	r.count(func(s *Stats) { s.Announces[vip]++ })
	return nil
}

// MAC returns the interface's MAC while it is open, or nil.
func (r *Responder) MAC() net.HardwareAddr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == nil {
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
