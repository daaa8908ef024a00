package daemon

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// memNet is a gossip network in memory: memberlist over it needs no
// sockets. memberlist's own MockNetwork blocks a sender for ever once its
// peer has stopped reading (its channels are unbuffered and it has no
// shutdown), so a test could not stop a host; here a stopped host is gone,
// as on a network: its packets are lost and connections to it refused.
type memNet struct {
	mu    sync.Mutex
	hosts map[string]*memTransport
	port  int
}

var _ memberlist.Transport = (*memTransport)(nil)

// memTransport is one host's end of a memNet.
type memTransport struct {
	net     *memNet
	addr    string
	packets chan *memberlist.Packet
	streams chan net.Conn
	down    chan struct{}
	once    sync.Once
}

// newTransport returns a transport at a new address of the network.
func (n *memNet) newTransport() *memTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.hosts == nil {
		n.hosts = map[string]*memTransport{}
	}
	n.port++
	t := &memTransport{net: n, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)),
		packets: make(chan *memberlist.Packet, 1024), streams: make(chan net.Conn), down: make(chan struct{})}
	n.hosts[t.addr] = t
	return t
}

func (n *memNet) host(addr string) (*memTransport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if t, ok := n.hosts[addr]; ok {
		return t, nil
	}
	return nil, fmt.Errorf("no route to %s", addr)
}

func (t *memTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) {
	host, port, _ := net.SplitHostPort(t.addr)
	p, _ := strconv.Atoi(port)
	return net.ParseIP(host), p, nil
}

// WriteTo delivers b, or loses it as UDP would if the peer is down or
// its queue full.
func (t *memTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	dest, err := t.net.host(addr)
	if err != nil {
		return time.Time{}, err
	}
	now := time.Now()
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: &net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: t.port()}, Timestamp: now}
	select {
	case <-dest.down:
	case dest.packets <- p:
	default:
	}
	return now, nil
}

func (t *memTransport) port() int {
	_, p, _ := t.FinalAdvertiseAddr("", 0)
	return p
}

func (t *memTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// DialTimeout connects to addr, unless it is down or does not accept in
// time.
func (t *memTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	dest, err := t.net.host(addr)
	if err != nil {
		return nil, err
	}
	local, remote := net.Pipe()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case dest.streams <- remote:
		return local, nil
	case <-dest.down:
	case <-t.down:
	case <-timer.C:
	}
	local.Close()
	remote.Close()
	return nil, errors.New("connection refused")
}

func (t *memTransport) StreamCh() <-chan net.Conn { return t.streams }

func (t *memTransport) Shutdown() error {
	t.once.Do(func() { close(t.down) })
	return nil
}
