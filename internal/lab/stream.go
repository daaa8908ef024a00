package lab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"
)

// StreamPort is where StartEcho's service listens on every host.
const StreamPort = 81

// StartEcho starts the host's echo service on StreamPort: a connection is
// greeted with the host's name, then everything it sends comes back, until
// it closes. Long-lived connections to the VIP use it.
func (h *Host) StartEcho() error {
	var ln net.Listener
	err := inNS(h.NS, func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", StreamPort))
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: echo service: %w", h.Name, err)
	}
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	h.lab.onClose(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			go func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				if _, err := io.WriteString(c, h.Name+"\n"); err != nil {
					return
				}
				io.Copy(c, c)
			}()
		}
	}()
	return nil
}

// Stream is a long-lived TCP connection from a client to a VIP's echo
// service that sends a few bytes every interval and waits for their echo.
type Stream struct {
	Client *Client
	VIP    netip.Addr
	Host   string // who accepted it
	Opened time.Time

	conn     net.Conn
	interval time.Duration
	stop     chan struct{}
	done     chan struct{}

	mu       sync.Mutex
	err      error         // the first failure; the stream stops there
	echoes   int           // round trips completed
	last     time.Time     // when the last echo came back
	maxStall time.Duration // the longest time between two echoes
}

// OpenStream connects from the client to vip's echo service and starts
// exchanging data every interval.
func (c *Client) OpenStream(vip netip.Addr, interval, timeout time.Duration) (*Stream, error) {
	s := &Stream{Client: c, VIP: vip, interval: interval, stop: make(chan struct{}), done: make(chan struct{})}
	err := inNS(c.NS, func() (err error) {
		s.conn, err = net.DialTimeout("tcp", netip.AddrPortFrom(vip, StreamPort).String(), timeout)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: stream to %s: %w", c.Name, vip, err)
	}
	s.conn.SetReadDeadline(time.Now().Add(timeout))
	r := bufio.NewReader(s.conn)
	name, err := r.ReadString('\n')
	if err != nil {
		s.conn.Close()
		return nil, fmt.Errorf("%s: stream to %s: greeting: %w", c.Name, vip, err)
	}
	s.Host = strings.TrimSpace(name)
	s.Opened, s.last = time.Now(), time.Now()
	go s.run(r)
	return s, nil
}

func (s *Stream) String() string {
	return fmt.Sprintf("%s→%s (on %s)", s.Client.Name, s.VIP, s.Host)
}

// run sends a numbered message every interval and reads it back. A reset,
// a wrong echo or no echo within 10 s ends the stream with an error.
func (s *Stream) run(r *bufio.Reader) {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		msg := fmt.Sprintf("%08d\n", n)
		s.conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, err := io.WriteString(s.conn, msg)
		var got string
		if err == nil {
			got, err = r.ReadString('\n')
		}
		if err == nil && got != msg {
			err = fmt.Errorf("echo %q, want %q", got, msg)
		}
		now := time.Now()
		s.mu.Lock()
		if err != nil {
			s.err = fmt.Errorf("after %d echoes: %w", s.echoes, err)
			s.mu.Unlock()
			return
		}
		s.maxStall = max(s.maxStall, now.Sub(s.last))
		s.last = now
		s.echoes++
		s.mu.Unlock()
	}
}

// StreamResult is how a stream went.
type StreamResult struct {
	Echoes   int
	MaxStall time.Duration // between two echoes (the interval when all is well)
	Err      error         // nil: never failed, closed cleanly
}

// Reset reports whether the stream failed by a TCP reset.
func (r StreamResult) Reset() bool { return errors.Is(r.Err, syscall.ECONNRESET) }

// Check returns the stream's state so far, without stopping it. A stream
// whose last echo is older than the stall counts as stalled now.
func (s *Stream) Check() StreamResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	stall := s.maxStall
	if s.err == nil {
		stall = max(stall, time.Since(s.last))
	}
	return StreamResult{Echoes: s.echoes, MaxStall: stall, Err: s.err}
}

// Close ends the stream cleanly, as a client that is done: it stops
// sending, half-closes, waits for the server's close and reports how the
// stream went.
func (s *Stream) Close() StreamResult {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	res := s.Check()
	if res.Err == nil {
		s.conn.SetDeadline(time.Now().Add(5 * time.Second))
		err := s.conn.(*net.TCPConn).CloseWrite()
		if err == nil {
			_, err = io.Copy(io.Discard, s.conn)
		}
		if err != nil {
			res.Err = fmt.Errorf("close: %w", err)
		}
	}
	s.conn.Close()
	return res
}
