package gossip

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"
)

// memberlist returns a join's error as text (it formats the cause with
// %v), so why a peer refused this host is read from the stream itself:
// the transport below memberlist records, for each peer, how the last
// stream to it went (the dial's error, the read's error, and the first
// byte the peer sent), and refusal judges from that record, by error
// value, never by memberlist's words.

// Stream bytes of memberlist's wire protocol ("the numeric values are part
// of the protocol itself"): a stream from a peer with a label starts with
// labelByte, the label's length and the label; then encryptedByte if the
// peer encrypts it.
const (
	labelByte     = 244
	encryptedByte = 10
)

// streamFate is how the last stream to a peer went.
type streamFate struct {
	mu      sync.Mutex
	dialErr error
	readErr error  // the first read error
	head    []byte // the first bytes the peer sent, up to 3 + a label
}

// answered says whether the peer sent anything.
func (f *streamFate) answered() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.head) > 0
}

// encrypted says whether the peer's stream was encrypted, past its label.
func (f *streamFate) encrypted() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.head
	if len(h) >= 2 && h[0] == labelByte {
		if len(h) < 2+int(h[1])+1 {
			return false
		}
		h = h[2+int(h[1]):]
	}
	return len(h) > 0 && h[0] == encryptedByte
}

// watchedTransport is memberlist's transport, recording each stream's fate
// by peer address.
type watchedTransport struct {
	memberlist.NodeAwareTransport
	mu    sync.Mutex
	fates map[string]*streamFate
}

func watchTransport(t memberlist.Transport) *watchedTransport {
	nat, ok := t.(memberlist.NodeAwareTransport)
	if !ok {
		nat = nodeAware{t}
	}
	return &watchedTransport{NodeAwareTransport: nat, fates: map[string]*streamFate{}}
}

// fate is how the last stream to addr went; nil if none was dialled.
func (t *watchedTransport) fate(addr string) *streamFate {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.fates[addr]
}

func (t *watchedTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	conn, err := t.NodeAwareTransport.DialAddressTimeout(a, timeout)
	return t.watch(a.Addr, conn, err)
}

func (t *watchedTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	conn, err := t.NodeAwareTransport.DialTimeout(addr, timeout)
	return t.watch(addr, conn, err)
}

func (t *watchedTransport) watch(addr string, conn net.Conn, err error) (net.Conn, error) {
	f := &streamFate{dialErr: err}
	t.mu.Lock()
	t.fates[addr] = f
	t.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return &watchedConn{Conn: conn, fate: f}, nil
}

// watchedConn records what the peer sent first, and the first read error.
type watchedConn struct {
	net.Conn
	fate *streamFate
}

func (c *watchedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	f := c.fate
	f.mu.Lock()
	if keep := 3 + 255 - len(f.head); keep > 0 {
		f.head = append(f.head, b[:min(n, keep)]...)
	}
	if err != nil && f.readErr == nil {
		f.readErr = err
	}
	f.mu.Unlock()
	return n, err
}

// nodeAware makes a plain Transport a NodeAwareTransport, as memberlist
// itself does.
type nodeAware struct{ memberlist.Transport }

func (n nodeAware) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return n.WriteTo(b, a.Addr)
}

func (n nodeAware) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return n.DialTimeout(a.Addr, timeout)
}

// hangUp says whether err is the peer closing the stream.
func hangUp(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
