// Package arptest has what tests of code that uses an arp.Responder need
// instead of a raw socket.
package arptest

import (
	"errors"
	"net"
	"sync"
)

// Conn is an arp.Conn fed from In that records what is written. Closing In
// is the link going away: the next read fails.
type Conn struct {
	In     chan []byte
	mu     sync.Mutex
	out    [][]byte
	dsts   []net.HardwareAddr
	closed chan struct{}
	once   sync.Once
}

// NewConn returns an open Conn.
func NewConn() *Conn {
	return &Conn{In: make(chan []byte, 16), closed: make(chan struct{})}
}

// ReadFrame returns the next frame from In.
func (c *Conn) ReadFrame(b []byte) (int, error) {
	select {
	case f, ok := <-c.In:
		if !ok {
			return 0, errors.New("link lost")
		}
		return copy(b, f), nil
	case <-c.closed:
		return 0, net.ErrClosed
	}
}

// WriteFrame records a copy of b, and dst.
func (c *Conn) WriteFrame(b []byte, dst net.HardwareAddr) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out = append(c.out, append([]byte(nil), b...))
	c.dsts = append(c.dsts, append(net.HardwareAddr(nil), dst...))
	return nil
}

// Close closes the Conn; a read in progress returns net.ErrClosed.
func (c *Conn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// Closed reports whether Close was called.
func (c *Conn) Closed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// Written returns the frames written so far.
func (c *Conn) Written() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.out...)
}

// WrittenTo returns the destinations the frames written so far were sent
// to, in order.
func (c *Conn) WrittenTo() []net.HardwareAddr {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]net.HardwareAddr(nil), c.dsts...)
}
