package arptest

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// NDPConn is an arp.NDPConn fed from In that records what it sends and the
// groups it joins and leaves; joining or leaving a group in Fail fails
// (the attempt is recorded). Closing In is the link going away.
type NDPConn struct {
	In   chan NDPIn
	Fail map[netip.Addr]bool

	mu     sync.Mutex
	joined []netip.Addr
	left   []netip.Addr
	sent   []NDPOut
	closed chan struct{}
	once   sync.Once
}

// NDPIn is a message as the socket reads it.
type NDPIn struct {
	Msg []byte
	CM  *ipv6.ControlMessage
	Src netip.Addr
}

// NDPOut is a message sent.
type NDPOut struct {
	M   ndp.Message
	Dst netip.Addr
}

// NewNDPConn returns an open NDPConn.
func NewNDPConn() *NDPConn {
	return &NDPConn{In: make(chan NDPIn, 4), closed: make(chan struct{})}
}

// ReadRaw returns the next message from In.
func (c *NDPConn) ReadRaw(b []byte) (int, *ipv6.ControlMessage, netip.Addr, error) {
	select {
	case m, ok := <-c.In:
		if !ok {
			return 0, nil, netip.Addr{}, net.ErrClosed
		}
		return copy(b, m.Msg), m.CM, m.Src, nil
	case <-c.closed:
		return 0, nil, netip.Addr{}, net.ErrClosed
	}
}

// WriteTo records m.
func (c *NDPConn) WriteTo(m ndp.Message, _ *ipv6.ControlMessage, dst netip.Addr) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = append(c.sent, NDPOut{m, dst})
	return nil
}

// JoinGroup records the join.
func (c *NDPConn) JoinGroup(g netip.Addr) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.joined = append(c.joined, g)
	if c.Fail[g] {
		return errors.New("no buffer space available")
	}
	return nil
}

// LeaveGroup records the leave.
func (c *NDPConn) LeaveGroup(g netip.Addr) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.left = append(c.left, g)
	if c.Fail[g] {
		return errors.New("no such address")
	}
	return nil
}

// Close closes the NDPConn; a read in progress returns net.ErrClosed.
func (c *NDPConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// Closed reports whether Close was called.
func (c *NDPConn) Closed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// State returns the groups joined and left, in order, and the messages sent.
func (c *NDPConn) State() (joined, left []netip.Addr, sent []NDPOut) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.joined), slices.Clone(c.left), slices.Clone(c.sent)
}

// Member reports whether the conn is in group g: joined more often than
// left.
func (c *NDPConn) Member(g netip.Addr) bool {
	joined, left, _ := c.State()
	count := func(gs []netip.Addr) int {
		n := 0
		for _, x := range gs {
			if x == g {
				n++
			}
		}
		return n
	}
	return count(joined) > count(left)
}
