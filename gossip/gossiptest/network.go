// Package gossiptest runs gossip clusters in memory, for tests that need
// real memberlist members but no sockets (and so no privileges).
package gossiptest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"
)

// Network is a gossip network in memory. memberlist's own MockNetwork hands
// each message straight to the receiver's reading goroutine, so two members
// that answer each other's pings at once wait on each other forever, and a
// member that stopped blocks whoever writes to it. Here each member's
// messages wait in a queue, dropped when it is full (as UDP would), and a
// member shut down is gone, as if it had lost power: what is sent to it is
// lost and connections to it are refused.
type Network struct {
	mu      sync.Mutex
	members map[netip.AddrPort]*Transport
	port    uint16
}

// NewNetwork returns an empty network.
func NewNetwork() *Network { return &Network{members: map[netip.AddrPort]*Transport{}} }

// Transport is one member's end of a Network; give it to
// gossip.ClusterConfig.Transport, with Addr as the member's Bind.
type Transport struct {
	net     *Network
	addr    netip.AddrPort
	packets chan *memberlist.Packet
	streams chan net.Conn
	down    chan struct{}
	once    sync.Once
	// cut: the member's cable is pulled (Cut): nothing it sends arrives,
	// nothing reaches it, and connections either way go unanswered.
	cut atomic.Bool
}

var _ memberlist.Transport = (*Transport)(nil)

// queue is how many messages wait for a member at most.
const queue = 256

// NewTransport adds a member at a new address of the network.
func (n *Network) NewTransport() *Transport {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.port++
	t := &Transport{
		net: n, addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), n.port),
		packets: make(chan *memberlist.Packet, queue), streams: make(chan net.Conn), down: make(chan struct{}),
	}
	n.members[t.addr] = t
	return t
}

func (n *Network) member(addr string) (*Transport, error) {
	a, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if t, ok := n.members[a]; ok {
		return t, nil
	}
	return nil, fmt.Errorf("no route to %s", addr)
}

// Addr is the member's address on the network.
func (t *Transport) Addr() netip.AddrPort { return t.addr }

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *Transport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	return t.addr.Addr().AsSlice(), int(t.addr.Port()), nil
}

// WriteTo implements memberlist.Transport: it delivers b, or loses it as
// UDP would if the member is down or its queue full.
func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	dest, err := t.net.member(addr)
	if err != nil {
		return time.Time{}, err
	}
	now := time.Now()
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: net.UDPAddrFromAddrPort(t.addr), Timestamp: now}
	if dest.isDown() || dest.cut.Load() || t.cut.Load() {
		return now, nil
	}
	select {
	case dest.packets <- p:
	default:
	}
	return now, nil
}

// PacketCh implements memberlist.Transport.
func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// DialTimeout implements memberlist.Transport: it connects to addr, unless
// the member there is down (refused: syscall.ECONNREFUSED, as from a host
// up with nothing on the port) or does not take the connection in time (a
// timeout). There is no backlog: a connection is a net.Pipe, whose writes
// wait for the reader, and memberlist writes the label on a new connection
// with no deadline.
func (t *Transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	dest, err := t.net.member(addr)
	if err != nil {
		return nil, err
	}
	if dest.isDown() {
		return nil, fmt.Errorf("dial %s: %w", addr, syscall.ECONNREFUSED)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	if dest.cut.Load() || t.cut.Load() {
		select { // no answer: a SYN into the void
		case <-timer.C:
		case <-t.down:
		}
		return nil, fmt.Errorf("dial %s: %w", addr, os.ErrDeadlineExceeded)
	}
	local, remote := net.Pipe()
	select {
	case dest.streams <- remote:
		return local, nil
	case <-dest.down:
	case <-t.down:
	case <-timer.C:
	}
	local.Close()
	remote.Close()
	if dest.isDown() {
		return nil, fmt.Errorf("dial %s: %w", addr, syscall.ECONNREFUSED)
	}
	return nil, fmt.Errorf("dial %s: %w", addr, os.ErrDeadlineExceeded)
}

// StreamCh implements memberlist.Transport.
func (t *Transport) StreamCh() <-chan net.Conn { return t.streams }

func (t *Transport) isDown() bool {
	select {
	case <-t.down:
		return true
	default:
		return false
	}
}

// Cut pulls the member's cable (cut true) or plugs it back: while it is
// cut, its packets and those to it are lost and its connections either way
// go unanswered, as for a host whose link is down. Connections open before
// stay open.
func (t *Transport) Cut(cut bool) { t.cut.Store(cut) }

// Shutdown implements memberlist.Transport: the member is gone.
func (t *Transport) Shutdown() error {
	t.once.Do(func() { close(t.down) })
	return nil
}
