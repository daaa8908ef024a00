// Package gossiptest runs gossip clusters in memory, for tests that need
// real memberlist members but no sockets (and so no privileges).
package gossiptest

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/memberlist"
)

// Network is memberlist's MockNetwork with what a cluster that runs for a
// while needs: MockTransport hands each message straight to the receiver's
// reading goroutine, so two members that answer each other's pings at once
// wait on each other forever, and a member that stopped blocks whoever
// writes to it. Here every member's messages are read at once into a queue,
// dropped when it is full (as UDP would), and dropped altogether once the
// member is shut down, as if it had lost power.
type Network struct {
	mock   memberlist.MockNetwork
	closed chan struct{}
	once   sync.Once
}

// NewNetwork returns an empty network; Close it when every member has
// stopped.
func NewNetwork() *Network { return &Network{closed: make(chan struct{})} }

// Transport is one member's end of a Network; give it to
// gossip.ClusterConfig.Transport, with Addr as the member's Bind.
type Transport struct {
	*memberlist.MockTransport
	addr    netip.AddrPort
	packets chan *memberlist.Packet
	streams chan net.Conn
	down    atomic.Bool
}

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// queue is how many messages wait for a member at most.
const queue = 256

// NewTransport adds a member called name (its memberlist node name). Make
// every member's transport before any member starts: the mock network's
// tables are not safe to change while it carries messages.
func (n *Network) NewTransport(name string) *Transport {
	mt := n.mock.NewTransport(name)
	ip, port, err := mt.FinalAdvertiseAddr("", 0)
	if err != nil {
		panic(err) // the mock's own address always parses
	}
	addr, _ := netip.AddrFromSlice(ip)
	t := &Transport{
		MockTransport: mt, addr: netip.AddrPortFrom(addr.Unmap(), uint16(port)),
		packets: make(chan *memberlist.Packet, queue), streams: make(chan net.Conn, queue),
	}
	go t.pump(n.closed)
	return t
}

// pump reads the member's messages as they come, until the network closes.
func (t *Transport) pump(closed <-chan struct{}) {
	for {
		select {
		case p := <-t.MockTransport.PacketCh():
			if t.down.Load() {
				continue
			}
			select {
			case t.packets <- p:
			default: // full: lost, as a datagram would be
			}
		case c := <-t.MockTransport.StreamCh():
			if t.down.Load() {
				c.Close() // nobody home: the dialer sees the stream end
				continue
			}
			select {
			case t.streams <- c:
			default:
				c.Close()
			}
		case <-closed:
			return
		}
	}
}

// Addr is the member's address on the network.
func (t *Transport) Addr() netip.AddrPort { return t.addr }

// PacketCh implements memberlist.Transport.
func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// StreamCh implements memberlist.Transport.
func (t *Transport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown implements memberlist.Transport: the member is gone, and what
// is sent to it from now on is lost.
func (t *Transport) Shutdown() error {
	t.down.Store(true)
	return nil
}

// Close stops the network. Every member must have stopped: a message sent
// after Close waits forever.
func (n *Network) Close() { n.once.Do(func() { close(n.closed) }) }
