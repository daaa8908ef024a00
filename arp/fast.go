package arp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/arpshare/arpshare/internal/bpf"
	"github.com/arpshare/arpshare/internal/bpf/fastpath"
)

// The kernel fast path (docs/design.md, "The kernel fast path"): a tc
// program answers the ARP requests of clients this responder has already
// decided on, from a map of its decisions, so that those frames never wake
// the daemon. The responder keeps the map: it stops the program (every
// frame to user space) the moment its snapshot changes, rewrites every
// known client's decision from the new one and lets it answer again; a
// client decided in user space (new, or its decision unknown to the kernel)
// is added after each read. The program reports the clients it decided on,
// and the responder learns them into the table, at most once a second and
// only when there are any, as if it had read their requests itself.

// kernelDecides reports whether the kernel may decide for the VIP's
// clients: when one host answers each client (hash, single), at once. A
// policy where every host answers (race) waits a random time first.
func (v SharedVIP) kernelDecides() bool { return v.Policy.Exclusive() && v.Policy.Delay() == 0 }

// fastProgram is what the responder asks of the kernel fast path: a
// *fastpath.Program, or a test's fake (ResponderConfig.program).
type fastProgram interface {
	Attach(ifindex int, mac [6]byte) error
	SetServing(on bool) error
	Replace(ds []fastpath.Decision) error
	Put(ds []fastpath.Decision) error
	DrainSeen(fn func(fastpath.Seen)) error
	Arm() error
	Wakes(ctx context.Context) (<-chan struct{}, error)
	Counts(slot uint8) (answered, notOwner uint64, err error)
	Detach() error
	Close() error
}

var _ fastProgram = (*fastpath.Program)(nil)

// kernel is the fast path while the interface is open.
type kernel struct {
	prog  fastProgram
	dirty chan struct{} // the snapshot changed: rewrite the decisions

	// Decisions the reading goroutine made for clients the kernel did not
	// know, written after each read; only that goroutine touches them.
	pending     []fastpath.Decision
	pendingSnap *snapshot
}

// loadFastPath loads the program if the responder is to use it. A kernel
// that refuses leaves it nil, with a warning: user space answers.
func (r *Responder) loadFastPath() fastProgram {
	if !r.cfg.FastPath {
		return nil
	}
	if r.cfg.program != nil {
		return r.cfg.program
	}
	load := fastpath.Load
	if r.cfg.IPv6 {
		load = fastpath.LoadNDP
	}
	p, err := load(r.cfg.Table.Max())
	if err != nil {
		r.cfg.Logger.Warn("kernel fast path not available: answering from user space only", "interface", r.cfg.Interface, "error", err)
		return nil
	}
	return p
}

// attachFastPath runs the program on the interface, now open with mac, and
// keeps its decisions until the returned function is called.
func (r *Responder) attachFastPath(ctx context.Context, p fastProgram, mac net.HardwareAddr) (detach func()) {
	if p == nil {
		return func() {}
	}
	err := fmt.Errorf("mac %v: not Ethernet", mac)
	var ifi *net.Interface
	if len(mac) == 6 {
		if ifi, err = net.InterfaceByName(r.cfg.Interface); err == nil {
			err = p.Attach(ifi.Index, [6]byte(mac))
		}
	}
	if err != nil {
		// Once: the interface may come and go many times.
		if !r.attachWarned {
			r.cfg.Logger.Warn("kernel fast path not attached: answering from user space only", "interface", r.cfg.Interface, "error", err)
			r.attachWarned = true
		}
		return func() {}
	}
	k := &kernel{prog: p, dirty: make(chan struct{}, 1)}
	k.dirty <- struct{}{}
	r.mu.Lock()
	r.kern.Store(k)
	r.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { r.keepDecisions(ctx, k) })
	return func() {
		r.mu.Lock()
		r.kern.Store(nil)
		r.mu.Unlock()
		cancel()
		wg.Wait()
		if err := p.SetServing(false); err != nil {
			r.cfg.Logger.Debug("stop kernel fast path", "interface", r.cfg.Interface, "error", err)
		}
		if err := p.Detach(); err != nil {
			r.cfg.Logger.Warn("kernel fast path", "interface", r.cfg.Interface, "error", err)
		}
	}
}

// pauseFastPath stops the kernel answering from decisions older than the
// snapshot just stored, and has them rewritten. Call with r.mu held.
func (r *Responder) pauseFastPath() {
	k := r.kern.Load()
	if k == nil {
		return
	}
	if err := k.prog.SetServing(false); err != nil {
		r.cfg.Logger.Warn("kernel fast path: pause", "interface", r.cfg.Interface, "error", err)
	}
	select {
	case k.dirty <- struct{}{}:
	default:
	}
}

// seenEvery is how often at most the clients the kernel decided on are
// learned: the first report after a read wakes the responder, which reads
// them a second after the last read.
const seenEvery = time.Second

// keepDecisions rewrites the kernel's decisions whenever the snapshot
// changes, and learns the clients it decided on. Nothing wakes it while
// the kernel decides on nobody.
func (r *Responder) keepDecisions(ctx context.Context, k *kernel) {
	wakes, err := k.prog.Wakes(ctx)
	var every <-chan time.Time
	if err != nil {
		r.cfg.Logger.Warn("kernel fast path: learning its clients every second", "interface", r.cfg.Interface, "error", err)
		t := time.NewTicker(seenEvery)
		defer t.Stop()
		every = t.C
	}
	later := time.NewTimer(seenEvery)
	later.Stop()
	defer later.Stop()
	var (
		known []Known
		due   <-chan time.Time
		last  time.Time
	)
	learn := func() {
		last = time.Now()
		if err := k.prog.Arm(); err != nil {
			r.cfg.Logger.Warn("kernel fast path: wake-ups", "interface", r.cfg.Interface, "error", err)
		}
		r.learnSeen(k)
	}
	learn()
	for {
		select {
		case <-ctx.Done():
			return
		case <-k.dirty:
			known = r.rewrite(k, known)
		case <-wakes:
			if wait := seenEvery - time.Since(last); wait > 0 {
				later.Reset(wait)
				due = later.C
			} else {
				learn()
			}
		case <-due:
			due = nil
			learn()
		case <-every:
			learn()
		}
	}
}

// rewrite gives the kernel the current snapshot's decision for every
// settled client with a unicast MAC (see decided), then lets it answer,
// unless this host answers nobody or the snapshot changed meanwhile (then
// it is rewritten again).
func (r *Responder) rewrite(k *kernel, known []Known) []Known {
	s := r.snap.Load()
	var ds []fastpath.Decision
	if s.view.Serving() {
		for i, v := range s.vips {
			if !v.kernelDecides() || v.Address.Is4() == r.cfg.IPv6 || v.counts.slot >= fastpath.MaxSlots {
				continue
			}
			known = r.cfg.Table.AppendSettled(known[:0], v.Address)
			for _, c := range known {
				if c.IP.Is4() == r.cfg.IPv6 || !unicastIP(c.IP) || !UnicastMAC(c.MAC[:]) || s.find(c.IP) >= 0 {
					continue
				}
				ok, _ := s.answer(i, c.IP)
				ds = append(ds, fastpath.Decision{VIP: v.Address, Client: c.IP, MAC: c.MAC, Answer: ok, Slot: uint8(v.counts.slot)})
			}
		}
	}
	if err := k.prog.Replace(ds); err != nil {
		r.cfg.Logger.Warn("kernel fast path: answering from user space", "interface", r.cfg.Interface, "error", err)
		return known
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.snap.Load() != s || !s.view.Serving() || r.kern.Load() != k {
		return known
	}
	if err := k.prog.SetServing(true); err != nil {
		r.cfg.Logger.Warn("kernel fast path: answering from user space", "interface", r.cfg.Interface, "error", err)
	}
	return known
}

// learnSeen learns the clients the kernel decided on into the table, as
// the reading goroutine would have.
func (r *Responder) learnSeen(k *kernel) {
	mono, now := bpf.Monotonic(), time.Now()
	err := k.prog.DrainSeen(func(c fastpath.Seen) {
		mac := net.HardwareAddr(c.MAC[:])
		if c.Direct != 0 {
			r.cfg.Table.Learn(c.VIP, c.Client, mac, now.Add(c.Direct-mono))
		}
		if c.Last != c.Direct {
			r.cfg.Table.LearnBroadcast(c.VIP, c.Client, mac, now.Add(c.Last-mono))
		}
	})
	if err != nil {
		r.cfg.Logger.Warn("kernel fast path: learn clients", "interface", r.cfg.Interface, "error", err)
	}
}

// decided notes a decision made in user space on a request of client (at
// mac) for VIP i, for the kernel to make from now on: once the client is
// settled in the table (ClientTable.Settled), which its second request
// makes it. Until then its requests keep coming to user space, which
// learns them at once: a client the kernel answered is learned only when
// the kernel's report is read, up to a second later, and its first
// request is the one the table must not miss. The decision was made on a
// sender the decision vetted (unicast, the Ethernet source); the check is
// repeated here because the kernel sends its answers to that MAC.
func (r *Responder) decided(k *kernel, s *snapshot, i int, v verdict, f []byte) {
	client := netip.AddrFrom4([4]byte(f[offSPA : offSPA+4]))
	if client.IsUnspecified() {
		return
	}
	r.note(k, s, i, v, client, f[offSHA:offSHA+6])
}

// decidedNDP is decided for a solicitation from src that carried mac (nil:
// none) as its source link-layer address. The kernel answers only those
// that do, to that MAC.
func (r *Responder) decidedNDP(k *kernel, s *snapshot, i int, v ndpVerdict, src netip.Addr, mac []byte) {
	if v.answer != answerSolicited || mac == nil || src.IsUnspecified() {
		return
	}
	r.note(k, s, i, v.verdict, src, mac)
}

// note is the part of decided that both protocols share.
func (r *Responder) note(k *kernel, s *snapshot, i int, v verdict, client netip.Addr, mac []byte) {
	vip := s.vips[i]
	if v.delay > 0 || !vip.kernelDecides() || vip.counts.slot >= fastpath.MaxSlots {
		return
	}
	if !UnicastMAC(mac) || !r.cfg.Table.Settled(vip.Address, client) {
		return
	}
	if s != k.pendingSnap {
		k.pending, k.pendingSnap = k.pending[:0], s
	}
	k.pending = append(k.pending, fastpath.Decision{
		VIP: vip.Address, Client: client, MAC: [6]byte(mac),
		Answer: v.out == Answered, Slot: uint8(vip.counts.slot),
	})
}

// flushDecided writes the decisions noted since the last flush, unless the
// snapshot they came from is no longer current.
func (r *Responder) flushDecided(k *kernel) {
	if len(k.pending) == 0 {
		return
	}
	r.mu.Lock()
	if r.snap.Load() == k.pendingSnap && r.kern.Load() == k {
		if err := k.prog.Put(k.pending); err != nil {
			r.cfg.Logger.Debug("kernel fast path: write decisions", "interface", r.cfg.Interface, "error", err)
		}
	}
	r.mu.Unlock()
	k.pending = k.pending[:0]
}

// foldKernelCounts adds what the kernel counted to the responder's own
// counters, before the program goes away. Call with r.mu held.
func (r *Responder) foldKernelCounts(p fastProgram) {
	for _, c := range r.counts {
		if c.slot >= fastpath.MaxSlots {
			continue
		}
		a, n, err := p.Counts(uint8(c.slot))
		if err != nil {
			continue
		}
		c.kernelBase[0].Add(a)
		c.kernelBase[1].Add(n)
	}
}

// readARP writes the decisions the frames of one read taught the kernel.
func (r *Responder) readARP() {
	if k := r.kern.Load(); k != nil {
		r.flushDecided(k)
	}
	r.busy.Store(0)
}

// FastPathAttached reports whether the kernel fast path's program is
// attached to the interface now (node.fast_path on or auto, the kernel
// allowed it, the interface is open).
func (r *Responder) FastPathAttached() bool { return r.kern.Load() != nil }
