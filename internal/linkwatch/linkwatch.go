// Package linkwatch knows whether each served VIP's link can serve it.
// A host serves a VIP only through a link that can serve it: an interface
// that is up, has carrier (its lower links too: the kernel carries a bond's
// or VLAN's failed lower link up to it), whose responder socket is open, and
// the VIP on lo. While one of these is missing, the host gossips the VIP as
// it gossips a failed health check, and the other hosts re-point its
// clients; when it is back, the host takes them back. The kernel's link and
// address events drive it: nothing runs while nothing changes.
package linkwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/arpshare/arpshare/internal/clock"
	"github.com/arpshare/arpshare/internal/config"
)

const (
	// linkRetry is the first wait before listening again to the kernel's
	// link events after the feed broke (its socket buffer overflowed, say);
	// it doubles up to linkRetryMax.
	linkRetry    = 100 * time.Millisecond
	linkRetryMax = 30 * time.Second
)

// Metric names of the link watch.
const (
	MetricLinkUp      = "arpshare_link_up"
	MetricLinkServing = "arpshare_link_serving"
)

var (
	descLinkUp = prometheus.NewDesc(MetricLinkUp,
		"1 while the kernel reports the serving interface administratively up and with carrier (its lower links up too); 0 while it is down, without carrier or missing.",
		[]string{"interface"}, nil)
	descLinkServing = prometheus.NewDesc(MetricLinkServing,
		"1 while this host can serve the VIPs of the interface through it: link up, its ARP/NDP sockets open and the VIPs on lo. At 0 the host is ineligible for those VIPs, as with a failed health check.",
		[]string{"interface"}, nil)
)

// Key names a link that serves VIPs, and its responder: an interface and
// an address family.
type Key struct {
	Iface string
	IPv6  bool
}

// KeyOf is the link that serves v.
func KeyOf(v config.VIP) Key { return Key{v.Interface, v.Address.Is6()} }

// Host is what the link watch works for: the config in force, the faults
// it publishes, and the plumbing it asks to redo.
type Host interface {
	Config() *config.Config
	// SetLinkFaults publishes why this host's links cannot serve some
	// VIPs (by address; none: all can).
	SetLinkFaults(faults map[netip.Addr]string)
	// FaultsChanged tells the cluster; it runs on the watch's goroutine.
	FaultsChanged()
	// RestoreVIPs lists lo's addresses with list, puts the VIPs in force
	// that are missing back, and returns those it could not, each with its
	// error.
	RestoreVIPs(list func() ([]netip.Addr, error)) (map[netip.Addr]error, error)
	// Reopen makes the responders of an interface open it again: the
	// interface their socket is on is gone or renamed.
	Reopen(iface string)
}

// Link is one interface as the kernel reports it.
type Link struct {
	Index int
	Name  string
	Up    bool   // administratively up (IFF_UP)
	Carry bool   // operationally up: carrier, lower links up (IFF_RUNNING)
	Oper  string // the kernel's operstate, for the reason
}

// problem says why the link cannot carry the VIP's traffic; "" if it can.
func (l Link) problem() string {
	switch {
	case !l.Up:
		return "down"
	case !l.Carry && l.Oper == netlink.LinkOperState(netlink.OperLowerLayerDown).String():
		return "no carrier (lower link down)"
	case !l.Carry:
		return "no carrier"
	}
	return ""
}

// Events takes what the kernel reports.
type Events interface {
	// linksListed replaces every interface known with all.
	LinksListed(all []Link)
	LinkChanged(l Link)
	LinkGone(index int)
	// loChanged follows a change of lo's addresses (and the first listing).
	LoChanged()
}

// Source is the kernel's side of the links; tests use a fake.
type Source interface {
	// Watch lists every interface, then reports each change, until ctx
	// ends (it returns nil) or the kernel's feed breaks (an error).
	Watch(ctx context.Context, to Events) error
	// LoAddrs lists the addresses on lo.
	LoAddrs() ([]netip.Addr, error)
}

// Kernel is the running kernel's links, through netlink.
type Kernel struct{}

var _ Source = Kernel{}

func stateOf(l netlink.Link) Link {
	a := l.Attrs()
	return Link{Index: a.Index, Name: a.Name, Up: a.RawFlags&unix.IFF_UP != 0,
		Carry: a.RawFlags&unix.IFF_RUNNING != 0, Oper: a.OperState.String()}
}

// Watch subscribes first and lists after, so no change falls between the
// two; a change seen twice is harmless.
func (Kernel) Watch(ctx context.Context, to Events) error {
	done := make(chan struct{})
	links, addrs := make(chan netlink.LinkUpdate, 64), make(chan netlink.AddrUpdate, 64)
	var mu sync.Mutex
	var last error
	onErr := func(err error) { mu.Lock(); last = err; mu.Unlock() }
	feedErr := func(what string) error {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Errorf("%s changes from the kernel ended: %w", what, errors.Join(last, errors.New("feed closed")))
	}
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribe to link changes: %w", err)
	}
	// Closing done ends the feeds; each closes its channel once what it
	// was sending is taken.
	addrsOn := false
	defer func() {
		close(done)
		for range links {
		}
		for addrsOn {
			_, addrsOn = <-addrs
		}
	}()
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("subscribe to address changes: %w", err)
	}
	addrsOn = true
	all, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var states []Link
	lo := 0
	for _, l := range all {
		states = append(states, stateOf(l))
		if l.Attrs().Name == "lo" {
			lo = l.Attrs().Index
		}
	}
	to.LinksListed(states)
	to.LoChanged()
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-links:
			if !ok {
				return feedErr("link")
			}
			if u.Header.Type == unix.RTM_DELLINK {
				to.LinkGone(int(u.Index))
			} else {
				to.LinkChanged(stateOf(u.Link))
			}
		case u, ok := <-addrs:
			if !ok {
				return feedErr("address")
			}
			if u.LinkIndex == lo {
				to.LoChanged()
			}
		}
	}
}

// LoAddrs lists lo's addresses.
func (Kernel) LoAddrs() ([]netip.Addr, error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, fmt.Errorf("list addresses of lo: %w", err)
	}
	addrs, err := netlink.AddrList(lo, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of lo: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

// socketState is a responder's socket: open, or why not.
type socketState struct {
	open bool
	err  string // why it closed, if it did
}

// Watch knows whether each served VIP's link can serve it, from the
// kernel's link and address events and the responders' opens and closes,
// and publishes the reasons to its Host (which leaves those VIPs out of
// the eligible ones it gossips). Its goroutine tells the cluster.
type Watch struct {
	log     *slog.Logger
	source  Source
	host    Host
	changed chan struct{} // a latest-value mailbox for gossip
	ready   chan struct{} // closed once the kernel listed the links
	once    sync.Once
	// moved is closed, and replaced, whenever a link changes: it wakes
	// the responders waiting for their link (waitLink).
	moved chan struct{}

	mu      sync.Mutex
	links   map[int]Link // by index; nil until the kernel listed them
	sockets map[Key]socketState
	lost    map[netip.Addr]string // VIPs missing from lo, that could not be put back
	faults  map[netip.Addr]string // as published
}

func New(log *slog.Logger, source Source, host Host) *Watch {
	return &Watch{log: log, source: source, host: host, changed: make(chan struct{}, 1), ready: make(chan struct{}), moved: make(chan struct{}),
		sockets: map[Key]socketState{}, lost: map[netip.Addr]string{}, faults: map[netip.Addr]string{}}
}

func (w *Watch) String() string { return "link watch" }

// Ready is closed once the kernel has listed the links.
func (w *Watch) Ready() <-chan struct{} { return w.ready }

// Run follows the kernel's events until ctx ends, listening again if the
// feed breaks, and gossips each change of the faults.
func (w *Watch) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-w.changed:
				w.host.FaultsChanged()
			}
		}
	})
	wait := linkRetry
	for {
		started := time.Now()
		err := w.source.Watch(ctx, w)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > linkRetryMax {
			wait = linkRetry
		}
		w.log.Warn("kernel link events lost: listening again", "error", err, "in", wait)
		if !clock.Sleep(ctx, wait) {
			return nil
		}
		wait = min(2*wait, linkRetryMax)
	}
}

func (w *Watch) LinksListed(all []Link) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.links = map[int]Link{}
	for _, l := range all {
		w.links[l.Index] = l
	}
	w.update()
	w.wake()
	w.once.Do(func() { close(w.ready) })
}

func (w *Watch) LinkChanged(l Link) {
	w.mu.Lock()
	if w.links == nil {
		w.mu.Unlock()
		return // before the listing, which will tell
	}
	was, ok := w.links[l.Index]
	w.links[l.Index] = l // a rename keeps the index
	w.update()
	w.wake()
	w.mu.Unlock()
	if ok && was.Name != l.Name {
		w.left(was.Name)
	}
}

func (w *Watch) LinkGone(index int) {
	w.mu.Lock()
	was, ok := w.links[index]
	delete(w.links, index)
	w.update()
	w.wake()
	w.mu.Unlock()
	if ok {
		w.left(was.Name)
	}
}

// left follows the interface named iface going away (removed, or renamed):
// a responder of it has its socket on an interface that no longer has the
// name, and must open the one that has it, when there is one again.
func (w *Watch) left(iface string) {
	if slices.Contains(w.host.Config().Interfaces(), iface) {
		w.host.Reopen(iface)
	}
}

// LoChanged puts back the VIPs someone took off lo, and records those it
// cannot.
func (w *Watch) LoChanged() {
	failed, err := w.host.RestoreVIPs(w.source.LoAddrs)
	if err != nil {
		w.log.Warn("cannot check the VIPs on lo", "error", err)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	clear(w.lost)
	for vip, err := range failed {
		w.lost[vip] = err.Error()
	}
	w.update()
}

// Opened records that the responder of k has its socket open.
func (w *Watch) Opened(k Key) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sockets[k] = socketState{open: true}
	w.update()
}

// Closed records that the responder of k has no socket open, and why:
// "socket failed: ...", "plumbing failed: ...".
func (w *Watch) Closed(k Key, why string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sockets[k] = socketState{err: why}
	w.update()
}

// wake wakes the responders waiting for their link. w.mu is held.
func (w *Watch) wake() {
	close(w.moved)
	w.moved = make(chan struct{})
}

// WaitLink returns once the kernel reports iface able to carry answers (or
// has not listed the links yet), or ctx's error once it ends: a responder
// waits in it rather than trying a link that is down every second.
func (w *Watch) WaitLink(ctx context.Context, iface string) error {
	said := ""
	for {
		w.mu.Lock()
		p, moved := w.linkProblem(iface), w.moved
		w.mu.Unlock()
		if p == "" {
			return nil
		}
		if p != said {
			w.log.Warn("interface not usable, waiting for it", "interface", iface, "error", "link "+iface+": "+p)
			said = p
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-moved:
		}
	}
}

// Configured follows a change of the config in force: VIPs and responders
// come and go.
func (w *Watch) Configured() {
	w.mu.Lock()
	defer w.mu.Unlock()
	keep := map[Key]bool{}
	for _, v := range w.host.Config().VIPs {
		keep[KeyOf(v)] = true
	}
	maps.DeleteFunc(w.sockets, func(k Key, _ socketState) bool { return !keep[k] })
	w.update()
}

// Usable says why iface cannot serve as the kernel reports it, or nil: a
// responder opens only a link that can carry its answers.
func (w *Watch) Usable(iface string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if p := w.linkProblem(iface); p != "" {
		return fmt.Errorf("link %s: %s", iface, p)
	}
	return nil
}

// linkProblem is what the kernel says is wrong with iface; "" if nothing,
// or if the kernel has not listed the links yet. w.mu is held.
func (w *Watch) linkProblem(iface string) string {
	if w.links == nil {
		return ""
	}
	for _, l := range w.links {
		if l.Name == iface {
			return l.problem()
		}
	}
	return "missing"
}

// fault says why this host's link cannot serve v; "" if it can. w.mu is
// held.
func (w *Watch) fault(v config.VIP) string {
	if p := w.linkProblem(v.Interface); p != "" {
		return fmt.Sprintf("link %s: %s", v.Interface, p)
	}
	proto := "ARP"
	if v.Address.Is6() {
		proto = "NDP"
	}
	if s := w.sockets[KeyOf(v)]; !s.open {
		if s.err == "" {
			s.err = "not open yet"
		}
		return fmt.Sprintf("link %s: %s %s", v.Interface, proto, s.err)
	}
	if err, ok := w.lost[v.Address]; ok {
		return fmt.Sprintf("VIP %s not on lo: %s", v.Address, err)
	}
	return ""
}

// update works out every VIP's fault and, if one changed, publishes them,
// logs the changes and wakes the goroutine that gossips. w.mu is held.
func (w *Watch) update() {
	faults := map[netip.Addr]string{}
	vips := w.host.Config().VIPs
	for _, v := range vips {
		if f := w.fault(v); f != "" {
			faults[v.Address] = f
		}
	}
	if maps.Equal(faults, w.faults) {
		return
	}
	for _, v := range vips {
		was, is := w.faults[v.Address], faults[v.Address]
		switch {
		case is == was:
		case is == "":
			w.log.Info("link serves again: taking clients back", "vip", v.Name, "was", was)
		default:
			w.log.Warn("link cannot serve: handing clients to other hosts", "vip", v.Name, "reason", is)
		}
	}
	w.faults = faults
	w.host.SetLinkFaults(maps.Clone(faults))
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// Describe and Collect make the link watch a collector: whether each
// serving interface is up, and whether it serves.
func (w *Watch) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLinkUp
	ch <- descLinkServing
}

func (w *Watch) Collect(ch chan<- prometheus.Metric) {
	w.mu.Lock()
	defer w.mu.Unlock()
	cfg := w.host.Config()
	serving := map[string]bool{}
	for _, iface := range cfg.Interfaces() {
		serving[iface] = true
	}
	for _, v := range cfg.VIPs {
		if w.faults[v.Address] != "" {
			serving[v.Interface] = false
		}
	}
	for _, iface := range cfg.Interfaces() {
		if w.links != nil {
			ch <- prometheus.MustNewConstMetric(descLinkUp, prometheus.GaugeValue, gauge01(w.linkProblem(iface) == ""), iface)
		}
		ch <- prometheus.MustNewConstMetric(descLinkServing, prometheus.GaugeValue, gauge01(serving[iface]), iface)
	}
}

func gauge01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
