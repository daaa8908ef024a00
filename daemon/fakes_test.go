package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdarp "github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/arp/arptest"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/gossip/gossiptest"
	"github.com/arpshare/arpshare/internal/config"
)

// fakeHost is a Host that records instead of plumbing the kernel.
type fakeHost struct {
	mu       sync.Mutex
	vips     map[netip.Addr]bool     // on lo
	quiet    []string                // interfaces whose sysctls were set
	failAdd  map[netip.Addr]error    // AddVIP fails for these
	quietErr error                   // QuietARP fails with it
	removed  map[netip.Addr]struct{} // ever removed
}

func newFakeHost() *fakeHost {
	return &fakeHost{vips: map[netip.Addr]bool{}, failAdd: map[netip.Addr]error{}, removed: map[netip.Addr]struct{}{}}
}

func (h *fakeHost) AddVIP(vip netip.Addr) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.failAdd[vip]; err != nil {
		return fmt.Errorf("add VIP %s to lo: %w", vip, err)
	}
	h.vips[vip] = true
	return nil
}

func (h *fakeHost) RemoveVIP(vip netip.Addr) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.vips, vip)
	h.removed[vip] = struct{}{}
	return nil
}

func (h *fakeHost) QuietARP(iface string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.quietErr != nil {
		return fmt.Errorf("interface %s: %w", iface, h.quietErr)
	}
	h.quiet = append(h.quiet, iface)
	return nil
}

func (h *fakeHost) onLo() []netip.Addr {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []netip.Addr
	for a := range h.vips {
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func (h *fakeHost) quieted(iface string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Contains(h.quiet, iface)
}

// sent returns the ARP packets written, with their Ethernet destination.
func sent(t *testing.T, c *arptest.Conn) []sentARP {
	t.Helper()
	var out []sentARP
	for _, b := range c.Written() {
		var f ethernet.Frame
		if err := f.UnmarshalBinary(b); err != nil {
			t.Fatalf("written frame: %v", err)
		}
		var p mdarp.Packet
		if err := p.UnmarshalBinary(f.Payload); err != nil {
			t.Fatalf("written ARP packet: %v", err)
		}
		out = append(out, sentARP{eth: f.Destination, p: p})
	}
	return out
}

type sentARP struct {
	eth net.HardwareAddr
	p   mdarp.Packet
}

// arpRequest is a broadcast "who has tpa? tell spa" from sha.
func arpRequest(t *testing.T, sha net.HardwareAddr, spa, tpa netip.Addr) []byte {
	t.Helper()
	p, err := mdarp.NewPacket(mdarp.OperationRequest, sha, spa, net.HardwareAddr{0, 0, 0, 0, 0, 0}, tpa)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	b, err := (&ethernet.Frame{Destination: ethernet.Broadcast, Source: sha, EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakeLinks are a host's interfaces: each open gets a new conn, kept for
// the test to feed and read.
type fakeLinks struct {
	mu   sync.Mutex
	mac  net.HardwareAddr
	arp  map[string][]*arptest.Conn
	ndp  map[string][]*arptest.NDPConn
	down map[string]bool // interfaces that do not exist
}

func newFakeLinks(mac net.HardwareAddr) *fakeLinks {
	return &fakeLinks{mac: mac, arp: map[string][]*arptest.Conn{}, ndp: map[string][]*arptest.NDPConn{}, down: map[string]bool{}}
}

func (l *fakeLinks) listen(iface string) (arp.Conn, net.HardwareAddr, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down[iface] {
		return nil, nil, fmt.Errorf("interface %s: no such interface", iface)
	}
	c := arptest.NewConn()
	l.arp[iface] = append(l.arp[iface], c)
	return c, l.mac, nil
}

func (l *fakeLinks) listenNDP(iface string) (arp.NDPConn, net.HardwareAddr, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down[iface] {
		return nil, nil, fmt.Errorf("interface %s: no such interface", iface)
	}
	c := arptest.NewNDPConn()
	l.ndp[iface] = append(l.ndp[iface], c)
	return c, l.mac, nil
}

// arpConn returns the last conn opened on iface for ARP, nil if none.
func (l *fakeLinks) arpConn(iface string) *arptest.Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cs := l.arp[iface]; len(cs) > 0 {
		return cs[len(cs)-1]
	}
	return nil
}

func (l *fakeLinks) ndpConn(iface string) *arptest.NDPConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cs := l.ndp[iface]; len(cs) > 0 {
		return cs[len(cs)-1]
	}
	return nil
}

// logBuffer collects a daemon's log for the test to read.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// node is one daemon under test, on fake interfaces and an in-memory
// gossip network.
type node struct {
	t      *testing.T
	name   string
	path   string // its config file
	dir    string
	d      *Daemon
	host   *fakeHost
	links  *fakeLinks
	kernel *fakeKernel
	log    *logBuffer
	notes  *notes
	cancel context.CancelFunc
	done   chan error
}

// notes records what the daemon tells systemd.
type notes struct {
	mu sync.Mutex
	s  []string
}

func (n *notes) add(s string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.s = append(n.s, s)
}

func (n *notes) has(prefix string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.ContainsFunc(n.s, func(s string) bool { return strings.HasPrefix(s, prefix) })
}

// cluster is a gossip network in memory, with the addresses of its hosts.
type cluster struct {
	net   *gossiptest.Network
	addrs map[string]string
	trans map[string]*gossiptest.Transport
}

// newCluster makes the transports of the named hosts.
func newCluster(names ...string) *cluster {
	c := &cluster{net: gossiptest.NewNetwork(), addrs: map[string]string{}, trans: map[string]*gossiptest.Transport{}}
	for _, n := range names {
		tr := c.net.NewTransport()
		c.trans[n] = tr
		c.addrs[n] = tr.Addr().String()
	}
	return c
}

// config is a node's config file: gossip as fast as memberlist goes, the
// VIPs given (TOML [[vip]] tables), no handover program.
func (c *cluster) config(name, dir, vips string) string {
	var peers []string
	for _, n := range slices.Sorted(maps.Keys(c.addrs)) {
		peers = append(peers, fmt.Sprintf("%q", c.addrs[n]))
	}
	return fmt.Sprintf(`[node]
name = %q
state_dir = %q
[gossip]
bind = %q
peers = [%s]
insecure = true
probe_interval = "100ms"
probe_timeout = "50ms"
gossip_interval = "20ms"
[api]
socket = %q
[handover]
enabled = false
%s`, name, filepath.Join(dir, "state"), c.addrs[name], strings.Join(peers, ", "), filepath.Join(dir, "api.sock"), vips)
}

// start runs the named host with the given VIPs until the test ends.
func (c *cluster) start(t *testing.T, name, vips string, mac net.HardwareAddr) *node {
	t.Helper()
	n := c.prepare(t, name, vips, mac)
	n.run()
	n.waitReady()
	return n
}

// startTwo runs h1 and h2, each with vips: at once, since each waits for
// the other to answer its join.
func (c *cluster) startTwo(t *testing.T, vips1, vips2 string) (h1, h2 *node) {
	t.Helper()
	h1, h2 = c.prepare(t, "h1", vips1, mac1), c.prepare(t, "h2", vips2, mac2)
	h1.run()
	h2.run()
	h1.waitReady()
	h2.waitReady()
	return h1, h2
}

// prepare writes the host's config and makes its daemon, without running it.
func (c *cluster) prepare(t *testing.T, name, vips string, mac net.HardwareAddr) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{t: t, name: name, dir: dir, path: filepath.Join(dir, "arpshare.toml"), host: newFakeHost(),
		links: newFakeLinks(mac), log: &logBuffer{}, notes: &notes{}, done: make(chan error, 1)}
	n.kernel = newFakeKernel(n.host, n.links)
	n.write(c.config(name, dir, vips))
	cfg, err := config.LoadConfig(n.path)
	if err != nil {
		t.Fatal(err)
	}
	n.d = newDaemon(cfg, slog.New(slog.NewTextHandler(n.log, &slog.HandlerOptions{Level: slog.LevelDebug})), "test", seams{
		host: n.host, listen: n.links.listen, listenNDP: n.links.listenNDP,
		transport: c.trans[name], notify: n.notes.add, drainWait: 500 * time.Millisecond, links: n.kernel,
	})
	return n
}

func (n *node) write(cfg string) {
	n.t.Helper()
	if err := os.WriteFile(n.path, []byte(cfg), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) run() {
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() { n.done <- n.d.Run(ctx, n.path) }()
	n.t.Cleanup(func() { n.stop() })
}

func (n *node) waitReady() {
	n.t.Helper()
	eventually(n.t, "READY=1", func() bool { return n.notes.has("READY=1") })
}

// stop stops the daemon gracefully and returns what Run returned.
func (n *node) stop() error {
	if n.cancel == nil {
		return nil
	}
	n.cancel()
	n.cancel = nil
	select {
	case err := <-n.done:
		return err
	case <-time.After(20 * time.Second):
		n.t.Errorf("%s: Run did not return", n.name)
		return errors.New("Run did not return")
	}
}

// eventuallyView waits up to 10 s for cond to hold for n's view, and returns
// that view: what the test checks next is checked on it, not on a later view
// (a false suspicion on a loaded machine can change the next one).
func eventuallyView(t *testing.T, n *node, what string, cond func(*gossip.View) bool) *gossip.View {
	t.Helper()
	var v *gossip.View
	eventually(t, what, func() bool {
		v = n.d.cluster.View()
		return cond(v)
	})
	return v
}

// eventually waits up to 10 s for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
