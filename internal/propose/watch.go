package propose

import (
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

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/arpshare/arpshare/gossip"
)

// Watcher keeps one raw socket on each interface that serves VIPs while
// node.propose_routers is on, and counts what their filters pass. It has
// no timer: each socket's reader blocks until a new connection to a VIP
// comes, and the sockets change only when the config or the view does.
type Watcher struct {
	log     *slog.Logger
	watched func() map[string][]netip.Addr // interface -> VIPs; nil: off
	counter *Counter
	listen  func(iface string, vips []netip.Addr) (conn, error)
	wake    chan struct{}
	// reloaded: the config changed since the last sync, so the counter
	// looks its neighbours up again.
	reloaded atomic.Bool

	mu    sync.Mutex
	socks map[string]*sock
	errs  map[string]error // by interface, logged once
}

// conn is a watching socket, or a fake in tests.
type conn interface {
	ReadFrom(b []byte) (int, net.Addr, error)
	Stats() (*packet.Stats, error)
	Close() error
}

type sock struct {
	conn    conn
	vips    []netip.Addr
	ifindex int
	dropped uint64 // by the kernel: the socket's buffer was full
}

// New returns a Watcher of the VIPs watched names, by interface (nil or
// empty: none); lookup finds the addresses a neighbour asked for a VIP
// from, listed says whether the VIP lists it in its routers already.
func New(watched func() map[string][]netip.Addr, lookup func(vip netip.Addr, mac [6]byte) []netip.Addr,
	listed func(vip netip.Addr, mac [6]byte, addrs []netip.Addr) bool, log *slog.Logger) *Watcher {
	return &Watcher{log: log, watched: watched, counter: NewCounter(lookup, listed), listen: listen,
		wake: make(chan struct{}, 1), socks: map[string]*sock{}, errs: map[string]error{}}
}

func (w *Watcher) String() string { return "router proposals" }

// Run opens and closes the sockets as Update and ViewChanged ask, until
// ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	defer w.closeAll()
	w.sync()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake:
			w.sync()
		}
	}
}

// Update looks at the config again (after a reload).
func (w *Watcher) Update() {
	w.reloaded.Store(true)
	w.poke()
}

func (w *Watcher) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// ViewChanged gives the members' MACs to the counter, and tries again an
// interface that could not be opened (it may have come up since: a host
// whose link serves again gossips it).
func (w *Watcher) ViewChanged(v *gossip.View) {
	w.counter.SetPeers(v.PeerMACs())
	w.mu.Lock()
	retry := len(w.errs) > 0
	w.mu.Unlock()
	if retry {
		w.poke()
	}
}

// Proposed returns vip's proposals.
func (w *Watcher) Proposed(vip netip.Addr) []Proposal { return w.counter.Proposed(vip) }

func (w *Watcher) sync() {
	want := w.watched()
	w.mu.Lock()
	defer w.mu.Unlock()
	keep := map[netip.Addr]bool{}
	for iface, vips := range want {
		for _, v := range vips {
			keep[v] = true
		}
		ifi, err := net.InterfaceByName(iface)
		if s := w.socks[iface]; s != nil && err == nil && s.ifindex == ifi.Index && slices.Equal(s.vips, vips) {
			continue
		}
		w.close(iface)
		if err == nil {
			err = w.open(iface, ifi.Index, vips)
		}
		if err != nil {
			if w.errs[iface] == nil {
				w.log.Warn("cannot watch for routers on this interface", "interface", iface, "error", err)
			}
			w.errs[iface] = err
			continue
		}
		delete(w.errs, iface)
	}
	for iface := range w.socks {
		if _, ok := want[iface]; !ok {
			w.close(iface)
		}
	}
	for iface := range w.errs {
		if _, ok := want[iface]; !ok {
			delete(w.errs, iface)
		}
	}
	if w.reloaded.Swap(false) {
		w.counter.Reset(keep)
	}
}

// open opens iface's socket and starts its reader. Call with w.mu held.
func (w *Watcher) open(iface string, index int, vips []netip.Addr) error {
	c, err := w.listen(iface, vips)
	if err != nil {
		return err
	}
	s := &sock{conn: c, vips: vips, ifindex: index}
	w.socks[iface] = s
	watch := map[netip.Addr]bool{}
	for _, v := range vips {
		watch[v] = true
	}
	go w.read(iface, s, watch)
	w.log.Info("watching for routers: neighbours that forward new connections from several addresses to a VIP are proposed in status", "interface", iface, "vips", vips)
	return nil
}

// read counts what s passes until it is closed or fails; then it leaves
// the interface to be opened again at the next change.
func (w *Watcher) read(iface string, s *sock, watch map[netip.Addr]bool) {
	b := make([]byte, snap)
	for {
		n, _, err := s.conn.ReadFrom(b)
		if err != nil {
			w.mu.Lock()
			if w.socks[iface] == s { // not closed by sync: failed
				w.log.Warn("watching for routers stopped on this interface", "interface", iface, "error", err)
				s.conn.Close()
				delete(w.socks, iface)
				w.errs[iface] = err
			}
			w.mu.Unlock()
			return
		}
		mac, src, dst, ok := parseSYN(b[:n])
		switch {
		case !ok:
			w.counter.Drop(BadFrame)
		case !watch[dst.Unmap()]:
			w.counter.Drop(NotVIP)
		default:
			w.counter.Observe(dst, mac, src)
		}
	}
}

// close closes iface's socket, if open. Call with w.mu held.
func (w *Watcher) close(iface string) {
	if s := w.socks[iface]; s != nil {
		delete(w.socks, iface)
		s.conn.Close()
	}
}

func (w *Watcher) closeAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for iface := range w.socks {
		w.close(iface)
	}
}

// Status is the watching as `arpshare status` shows it.
type Status struct {
	Enabled    bool              `json:"enabled"` // node.propose_routers
	Interfaces []string          `json:"interfaces,omitempty"`
	Unopened   map[string]string `json:"unopened,omitempty"` // interface -> why
	// Segments counts the new connections' first segments the sockets
	// passed, by outcome; dropped_kernel those the kernel dropped with
	// the socket's buffer full.
	Segments map[string]uint64 `json:"segments,omitempty"`
}

// Status reports the watching's state.
func (w *Watcher) Status() Status {
	st := Status{Enabled: w.watched() != nil, Segments: w.counter.Counts()}
	w.mu.Lock()
	defer w.mu.Unlock()
	st.Interfaces = slices.Sorted(maps.Keys(w.socks))
	for iface, err := range w.errs {
		if st.Unopened == nil {
			st.Unopened = map[string]string{}
		}
		st.Unopened[iface] = err.Error()
	}
	var dropped uint64
	for _, s := range w.socks {
		// The kernel's counts reset when read: keep the sum.
		if ks, err := s.conn.Stats(); err == nil {
			s.dropped += uint64(ks.Drops)
		}
		dropped += s.dropped
	}
	if dropped > 0 {
		st.Segments["dropped_kernel"] = dropped
	}
	return st
}

// listen opens a raw socket on iface whose filter passes the new
// connections to vips addressed to this host.
func listen(iface string, vips []netip.Addr) (conn, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, err
	}
	prog, err := filter(vips, true)
	if err != nil {
		return nil, err
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("propose: filter: %w", err)
	}
	c, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, &packet.Config{Filter: raw})
	if err != nil {
		return nil, fmt.Errorf("open raw socket: %w", err)
	}
	// Not a tap on what the host sends: without this, every frame it
	// sends on the interface would be copied for the socket's filter to
	// drop.
	rc, err := c.SyscallConn()
	if err == nil {
		cerr := rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1) })
		err = errors.Join(err, cerr)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("raw socket: ignore outgoing frames: %w", err)
	}
	return c, nil
}
