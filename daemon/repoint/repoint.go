package repoint

import (
	"cmp"
	"context"
	"encoding/binary"
	"iter"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/config"
)

// Re-pointing: when ownership of a known client moves to this host, the
// client still has the old owner's MAC cached (possibly a dead host), so this
// host sends it a request addressed to it from the VIP (see arp.Responder.
// Repoint). One packet can be lost, so each client gets a few, spaced,
// unless it answers the first; all packets together keep to the configured
// rate, clients seen most recently first. A health check that flaps is
// damped by its rise/fall counts before it gets here.
const (
	repointRounds  = 3                      // packets per client
	repointSpacing = 250 * time.Millisecond // between a client's packets
	// repointTick is how often the queue is looked at: at the default rate
	// of 5,000 packets per second, 100 packets a tick.
	repointTick = 20 * time.Millisecond
	// A client that has not answered (or asked for the VIP) this long
	// after its last packet counts as unanswered.
	confirmWait = time.Second
	// A single-mode VIP taking over is announced by broadcast, as MetalLB
	// does, several times over more than a second, for the machines that
	// miss one.
	announceCount   = 4
	announceSpacing = 500 * time.Millisecond
	// While hosts' views differ (a host joining, a check changing), a
	// client may be answered by a host that soon no longer owns it, and the
	// owner does not know to re-point it. So once the eligible hosts of a
	// VIP have been stable this long, every owner re-points each of its
	// clients once more. It must outlast a metadata update that has to be
	// sent twice (the first unconfirmed after 500 ms, see
	// gossip.Cluster.UpdateMeta): a host that settles on a view that old
	// pulls back clients their new owner has just taken.
	settleDelay = 2 * time.Second
	// When this host refutes a suspicion or its own death, others may have
	// re-pointed its clients while its view did not change: it settles
	// every VIP as after a view change, twice per client. Not at once: the
	// views of the hosts involved are stale until the refutation has
	// spread, and a host that re-asserts on a view in which a live host is
	// still dead claims that host's clients.
	reassertRounds = 2
	// A refutation re-asserts at most once per refuteEvery, however many
	// come: each round sends reassertRounds packets per client at the full
	// rate, and a host that keeps being suspected (or something that makes
	// it look so) must not keep the switch busy with them.
	refuteEvery = 10 * time.Second
	expireEvery = time.Minute // how often stale clients are forgotten
	// A packet that cannot be sent (the interface is down or being
	// reopened, which takes up to a second after a link comes back) is
	// tried again every repointSpacing, up to this many times: 5 s.
	maxSendFailures = 20
)

// clientKey is a client of a VIP, compact: a failover or a settle queues
// every client a host holds, hundreds of thousands of them, each with a
// key in the queue and in pending. The VIP is an index into
// Repointer.vips (see keyOf).
type clientKey struct {
	ip  [16]byte
	vip uint16
}

// queued is a client this host is re-pointing.
type queued struct {
	key       clientKey
	protected bool  // protected clients go first
	periodic  bool  // in the periodic re-assertion, paced apart
	left      int32 // packets still to send
	fails     int32 // packets that could not be sent
	// When the client was last seen and first learned, for the order:
	// nanoseconds from Repointer.epoch.
	seen, firstSeen int64
	first           time.Time // when the first packet went out; zero before
	next            time.Time // when the next packet is due
}

// awaited is a client that got its packets and has yet to answer.
type awaited struct {
	key      clientKey
	first    time.Time
	deadline time.Time
}

// Status is the re-pointing round in progress, for `arpshare status`.
type Status struct {
	Rate    int `json:"rate"`    // packets per second at most (node.repoint_rate)
	Clients int `json:"clients"` // clients still to re-point
	Packets int `json:"packets"` // packets still to send
	// Remaining is how long the round will take at that rate (JSON:
	// nanoseconds).
	Remaining time.Duration `json:"remaining"`
	// Confirmed and Unanswered count, since start, the clients that
	// answered their re-pointing request and those that did not.
	Confirmed  uint64 `json:"confirmed"`
	Unanswered uint64 `json:"unanswered"`
	// ByVIP splits them by VIP, for the metrics.
	ByVIP map[netip.Addr]Results `json:"-"`
	// Reasserting is the clients still to get their packet in the periodic
	// re-assertion round in progress (node.reassert_interval), at
	// ReassertRate packets per second (node.reassert_rate, or less to
	// spread the round over the interval).
	Reasserting  int     `json:"reasserting"`
	ReassertRate float64 `json:"reassert_rate"`
}

// Results counts one VIP's clients that answered their re-pointing
// and those that did not.
type Results struct{ Confirmed, Unanswered uint64 }

// result counts n clients of vip, answered or not.
func (s *Status) result(vip netip.Addr, answered bool, n uint64) {
	if s.ByVIP == nil {
		s.ByVIP = map[netip.Addr]Results{}
	}
	c := s.ByVIP[vip]
	if answered {
		s.Confirmed += n
		c.Confirmed += n
	} else {
		s.Unanswered += n
		c.Unanswered += n
	}
	s.ByVIP[vip] = c
}

// VIPSource tells the repointer which VIPs this host serves now, and how
// each shares its clients.
type VIPSource interface {
	VIPs() []arp.SharedVIP
}

// Sender sends the re-pointing packets.
type Sender interface {
	Repoint(vip netip.Addr, c arp.Client) error // unicast to one client
	Announce(vip netip.Addr) error              // to the whole segment
}

// Config is what a Repointer works with, and how fast.
type Config struct {
	Table  *arp.ClientTable
	VIPs   VIPSource
	Send   Sender
	Logger *slog.Logger
	// Rate is how many packets per second may go out at most.
	Rate int
	// Reassert is how often every client this host owns is re-pointed
	// once, as a safety net; 0: never.
	Reassert time.Duration
	// ReassertRate is how many packets per second that periodic round
	// sends at most (within Rate); it is spread over the whole interval
	// when that is slower.
	ReassertRate int
	// Progress, if set, hears of each view whose re-pointing is done.
	Progress Progress
}

// Repointer re-points clients when the view gives them to this host.
type Repointer struct {
	cfg     Config
	views   chan *gossip.View // the latest view not yet planned
	refuted chan struct{}
	last    *gossip.View // the view in force
	queue   []*queued    // failover and settling, at Rate
	slow    *slowRound   // the periodic re-assertion, at slowRate; nil: none
	pending map[clientKey]*queued
	// The VIPs clientKeys index, and their indices: the VIPs served since
	// the start, a handful.
	vips     []netip.Addr
	vipIdx   map[netip.Addr]uint16
	epoch    time.Time // what queued times count from
	held     int       // the most clients pending since the maps were made
	awaiting []awaited // in deadline order
	announce map[netip.Addr]announcement
	// VIPs whose eligible hosts changed, and when to settle them.
	unsettled map[netip.Addr]bool
	settleAt  time.Time
	// Packets per client at the next settle: 1, or reassertRounds after
	// a refutation.
	settleRounds int
	// The re-assertion a refutation asked for is due at refuteAt (zero:
	// none pending); the last one was done at lastRefute.
	refuteAt, lastRefute time.Time
	tokens               float64
	slowRate, slowTokens float64 // of the periodic round in progress
	lastTick             time.Time
	// moved are the clients the views gave this host that still get
	// packets; reported is the digest last given to Progress.
	moved     map[clientKey]bool
	digest    uint32 // of last
	reported  uint32
	heartbeat *atomic.Int64 // Unix ns the work in hand began; 0 while waiting

	status *lockedStatus
}

// lockedStatus is the status the loop writes and the API reads.
type lockedStatus struct {
	mu sync.Mutex
	s  Status
}

// Heartbeat returns when the repointer's loop began the work it is doing,
// or now while it waits for work: the loop sleeps as long as nothing is
// due, and a loop that waits is not stuck.
func (r *Repointer) Heartbeat() time.Time {
	if b := r.heartbeat.Load(); b != 0 {
		return time.Unix(0, b)
	}
	return time.Now()
}

type announcement struct {
	left int
	next time.Time
}

// New returns a repointer; Run starts it.
func New(cfg Config) *Repointer {
	r := Repointer{cfg: cfg}
	if r.cfg.Rate <= 0 {
		r.cfg.Rate = config.DefaultRepointRate
	}
	if r.cfg.ReassertRate <= 0 {
		r.cfg.ReassertRate = config.DefaultReassertRate
	}
	r.views = make(chan *gossip.View, 1)
	r.refuted = make(chan struct{}, 1)
	r.pending = map[clientKey]*queued{}
	r.vipIdx = map[netip.Addr]uint16{}
	r.epoch = time.Now()
	r.announce = map[netip.Addr]announcement{}
	r.unsettled = map[netip.Addr]bool{}
	r.moved = map[clientKey]bool{}
	r.heartbeat = new(atomic.Int64)
	r.status = &lockedStatus{s: Status{Rate: r.cfg.Rate}}
	return &r
}

func (r *Repointer) String() string { return "repointer" }

// ViewChanged gives the repointer a new view, or the same one again after
// a reload. It never blocks: a view not yet planned is replaced.
func (r *Repointer) ViewChanged(v *gossip.View) {
	for {
		select {
		case r.views <- v:
			return
		default:
		}
		select {
		case <-r.views:
		default:
		}
	}
}

// Refuted tells the repointer that this host refuted a suspicion or its own
// death: other hosts may have taken its clients. It never blocks.
func (r *Repointer) Refuted() {
	select {
	case r.refuted <- struct{}{}:
	default:
	}
}

// Status returns the round in progress.
func (r *Repointer) Status() Status {
	r.status.mu.Lock()
	defer r.status.mu.Unlock()
	s := r.status.s
	s.ByVIP = maps.Clone(s.ByVIP)
	return s
}

// Run re-points clients until ctx ends. Nothing wakes it while there is
// no work: the queue is looked at every repointTick only while failover or
// settling packets are owed; otherwise the loop sleeps until the next thing
// due (a packet of the periodic round, at its pace, an announcement, a
// settle, a refutation's re-assertion, the end of a wait for answers), or
// until a view, a refutation or the periodic timers come.
func (r *Repointer) Run(ctx context.Context) error {
	wake := time.NewTimer(time.Hour)
	wake.Stop()
	defer wake.Stop()
	expire := time.NewTicker(expireEvery)
	defer expire.Stop()
	var reassert <-chan time.Time
	if r.cfg.Reassert > 0 {
		t := time.NewTicker(r.cfg.Reassert)
		defer t.Stop()
		reassert = t.C
	}
	armed := false
	for {
		if next, ok := r.nextWake(time.Now()); ok {
			wake.Reset(max(0, time.Until(next)))
			armed = true
		} else if armed {
			wake.Stop()
			armed = false
		}
		r.heartbeat.Store(0) // waiting: never stuck
		select {
		case <-ctx.Done():
			return nil
		case v := <-r.views:
			r.heartbeat.Store(time.Now().UnixNano())
			r.plan(v, r.cfg.Table.All(), time.Now())
			r.round(v, time.Now())
		case <-r.refuted:
			r.heartbeat.Store(time.Now().UnixNano())
			r.refute(time.Now())
		case now := <-wake.C:
			armed = false
			r.heartbeat.Store(time.Now().UnixNano())
			r.round(r.last, now)
		case now := <-reassert:
			r.heartbeat.Store(time.Now().UnixNano())
			r.reassert(r.last, now)
		case now := <-expire.C:
			r.heartbeat.Store(time.Now().UnixNano())
			if n := r.cfg.Table.Expire(now); n > 0 {
				r.cfg.Logger.Debug("forgot stale clients", "count", n)
			}
		}
	}
}

// nextWake returns when the loop must next look at its work, if it has
// any: every repointTick while failover packets are owed (the pace of
// refill), else the earliest of what is due later, the periodic round's
// next packet included.
func (r *Repointer) nextWake(now time.Time) (time.Time, bool) {
	if len(r.queue) > 0 {
		return now.Add(repointTick), true
	}
	var next time.Time
	due := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	due(r.slowDue(now))
	for _, a := range r.announce {
		due(a.next)
	}
	if len(r.awaiting) > 0 {
		due(r.awaiting[0].deadline)
	}
	if len(r.unsettled) > 0 {
		due(r.settleAt)
	}
	due(r.refuteAt)
	return next, !next.IsZero()
}

// slowDue returns when the periodic round can send its next packet, or
// zero if it has none left. The round is spread over the whole interval
// (30 clients a minute: one packet every 2 s), so ticking through it would
// keep the loop turning all the time: it sleeps until its pace earns the
// next packet, and at least a tick, so that a fast round still goes out in
// a tick's batches.
func (r *Repointer) slowDue(now time.Time) time.Time {
	if r.slow == nil {
		return time.Time{}
	}
	first := r.slow.due()
	if first.IsZero() {
		return time.Time{}
	}
	at := later(now.Add(repointTick), first)
	// A nanosecond more than the exact time: the refill's sum must reach a
	// whole packet, not fall short of it by a rounding.
	earn := func(tokens, rate float64) {
		if tokens < 1 && rate > 0 {
			at = later(at, now.Add(time.Duration((1-tokens)/rate*float64(time.Second))+time.Nanosecond))
		}
	}
	earn(r.slowTokens, r.slowRate)
	earn(r.tokens, float64(r.cfg.Rate))
	return at
}

// keyOf returns the key of client ip of vip.
func (r *Repointer) keyOf(vip, ip netip.Addr) clientKey {
	i, ok := r.vipIdx[vip]
	if !ok {
		i = uint16(len(r.vips))
		r.vips = append(r.vips, vip)
		r.vipIdx[vip] = i
	}
	return clientKey{ip: ip.As16(), vip: i}
}

// addrs returns the VIP and the client of key k.
func (r *Repointer) addrs(k clientKey) (vip, ip netip.Addr) {
	return r.vips[k.vip], netip.AddrFrom16(k.ip).Unmap()
}

// enqueue makes sure client c gets at least rounds more packets, at the
// full rate: a client waiting in the periodic round moves up.
func (r *Repointer) enqueue(c arp.Entry, rounds int, now time.Time) bool {
	k := r.keyOf(c.VIP, c.IP)
	if r.slow != nil {
		r.slow.moved[k] = true
	}
	if q, ok := r.pending[k]; ok {
		if !q.periodic {
			q.left = max(q.left, int32(rounds))
			return false
		}
		q.left = 0 // dropped from the slow queue at the next round
	}
	q := &queued{key: k, seen: int64(c.LastSeen.Sub(r.epoch)), firstSeen: int64(c.FirstSeen.Sub(r.epoch)),
		protected: c.Protected, left: int32(rounds), next: now}
	r.pending[k] = q
	r.queue = append(r.queue, q)
	r.held = max(r.held, len(r.pending))
	return true
}

// sortQueue puts first the clients with evidence of a real machine behind
// them (protected: a flood of spoofed senders, however often each asks, is
// made of probationary ones, and must not delay the real clients), seen
// most recently first: they are the most likely to be sending traffic right
// now. The others follow, known longest first: a flood is recent, and a real
// client not yet vouched for here was most likely learned before it (seen
// once, at its first request, by every host but its owner).
func (r *Repointer) sortQueue() { sortByEvidence(r.queue) }

func sortByEvidence(queue []*queued) {
	slices.SortStableFunc(queue, func(a, b *queued) int {
		switch {
		case a.protected != b.protected:
			if a.protected {
				return -1
			}
			return 1
		case !a.protected:
			if c := cmp.Compare(a.firstSeen, b.firstSeen); c != 0 {
				return c
			}
		}
		return cmp.Compare(b.seen, a.seen)
	})
}

// policies returns the served VIPs' policies.
func (r *Repointer) policies() map[netip.Addr]policy.Policy {
	m := map[netip.Addr]policy.Policy{}
	for _, v := range r.cfg.VIPs.VIPs() {
		m[v.Address] = v.Policy
	}
	return m
}

// plan queues what v gives this host that the previous view did not.
func (r *Repointer) plan(v *gossip.View, clients iter.Seq[arp.Entry], now time.Time) {
	pols := r.policies()
	for vip, p := range pols {
		if !slices.Equal(v.Eligible(vip), r.last.Eligible(vip)) {
			r.unsettled[vip] = true
			r.settleAt = now.Add(settleDelay)
		}
		if p.Announces(v, vip) && !p.Announces(r.last, vip) {
			r.cfg.Logger.Info("taking over VIP", "vip_address", vip, "mode", p.Mode())
			r.announce[vip] = announcement{left: announceCount, next: now}
		}
	}
	n := 0
	for c := range clients {
		if p, ok := pols[c.VIP]; ok && p.Moved(r.last, v, c.VIP, c.IP) {
			r.enqueue(c, repointRounds, now)
			r.moved[r.keyOf(c.VIP, c.IP)] = true
			n++
		}
	}
	if n > 0 {
		r.sortQueue()
		r.cfg.Logger.Info("re-pointing clients to this host", "clients", n)
	}
	r.last = v
	r.digest = ViewDigest(v)
}

// reassert is the periodic safety net: it queues every client this host
// holds in v for one packet, in a round of its own, paced apart from
// failover. The round is spread over the whole interval, and never faster
// than ReassertRate: a switch that polices ARP per port (DAI) sees a trickle
// every minute, not a burst. A safety net is never a flood: no new round
// while a failover round or the last periodic one is still going, so
// nothing is pending when one begins.
func (r *Repointer) reassert(v *gossip.View, now time.Time) {
	if len(r.queue) > 0 || r.slow != nil {
		return
	}
	pols := r.policies()
	round := r.newSlowRound(v, pols, r.cfg.Table.All(), now)
	n := len(round.items)
	for vip, p := range pols {
		if _, ok := r.announce[vip]; !ok && p.Announces(v, vip) {
			r.announce[vip] = announcement{left: 1, next: now}
		}
	}
	if n == 0 {
		return
	}
	r.slow = round
	r.slowRate = float64(r.cfg.ReassertRate)
	if r.cfg.Reassert > 0 {
		r.slowRate = min(r.slowRate, float64(n)/r.cfg.Reassert.Seconds())
	}
	r.slowTokens = 1
	r.cfg.Logger.Debug("re-asserting this host's clients", "why", "periodic", "clients", n, "packets_per_second", r.slowRate)
}

// round sends what is due: announcements, then first packets, then repeats,
// as many as the rate allows since the last round.
func (r *Repointer) round(v *gossip.View, now time.Time) {
	if !r.refuteAt.IsZero() && !now.Before(r.refuteAt) {
		for _, vip := range r.cfg.VIPs.VIPs() {
			r.unsettled[vip.Address] = true
		}
		r.settleRounds = reassertRounds
		r.refuteAt, r.lastRefute = time.Time{}, now
	}
	if len(r.unsettled) > 0 && !now.Before(r.settleAt) {
		r.settle(v, now)
	}
	pols := r.policies()
	r.announceDue(v, pols, now)
	r.refill(now)
	r.sendDue(v, pols, now)
	r.queue = r.drop(r.queue)
	r.dropSlow()
	r.confirm(now)
	r.report()
	r.done()
	r.shrink()
}

// shrinkAfter is how many clients a round must have queued for its maps
// and slices to be made anew once it is over: Go's maps keep their buckets
// when emptied, and slices their arrays, so a failover's hundreds of
// thousands of clients would keep their memory for ever.
const shrinkAfter = 1024

func (r *Repointer) shrink() {
	if r.held < shrinkAfter || len(r.queue) > 0 || len(r.pending) > 0 || len(r.moved) > 0 || len(r.awaiting) > 0 {
		return
	}
	r.queue, r.awaiting, r.held = nil, nil, 0
	r.pending, r.moved = map[clientKey]*queued{}, map[clientKey]bool{}
}

// Progress hears when this host has re-pointed every client a view gave it.
type Progress interface {
	// Repointed is called from the repointer's loop with the digest of
	// the view (ViewDigest); it must not block.
	Repointed(digest uint32)
}

// done tells Progress once every client the views gave this host has had
// its packets (or answered, or is no longer this host's): the peers of a
// draining host wait for that. Repeats of a settle or re-assertion are
// not waited for: the first packets re-point the client.
func (r *Repointer) done() {
	maps.DeleteFunc(r.moved, func(k clientKey, _ bool) bool { return r.pending[k] == nil })
	if r.cfg.Progress == nil || r.last == nil || len(r.moved) > 0 {
		return
	}
	if r.digest != r.reported {
		r.reported = r.digest
		r.cfg.Progress.Repointed(r.digest)
	}
}

// announceDue broadcasts the announcements that are due, and drops those
// of VIPs this host no longer announces.
func (r *Repointer) announceDue(v *gossip.View, pols map[netip.Addr]policy.Policy, now time.Time) {
	for vip, a := range r.announce {
		switch {
		case pols[vip] == nil || !pols[vip].Announces(v, vip):
			delete(r.announce, vip)
		case !now.Before(a.next):
			if err := r.cfg.Send.Announce(vip); err != nil {
				r.cfg.Logger.Warn("announce VIP", "vip_address", vip, "error", err)
			}
			if a.left <= 1 {
				delete(r.announce, vip)
			} else {
				r.announce[vip] = announcement{left: a.left - 1, next: a.next.Add(announceSpacing)}
			}
		}
	}
}

// drop takes the clients with no packet left out of queue, and out of
// pending unless they moved to the other queue.
func (r *Repointer) drop(queue []*queued) []*queued {
	return slices.DeleteFunc(queue, func(q *queued) bool {
		if q.left == 0 {
			if r.pending[q.key] == q {
				delete(r.pending, q.key)
			}
			return true
		}
		return false
	})
}

// refill tops the packet budget up at the rate, up to one tick's worth (at
// least one packet), so the packets go out evenly rather than in bursts.
func (r *Repointer) refill(now time.Time) {
	if !r.lastTick.IsZero() {
		r.tokens += now.Sub(r.lastTick).Seconds() * float64(r.cfg.Rate)
	} else {
		r.tokens = 1
	}
	r.tokens = min(r.tokens, max(1, float64(r.cfg.Rate)*repointTick.Seconds()))
	if !r.lastTick.IsZero() {
		r.slowTokens += now.Sub(r.lastTick).Seconds() * r.slowRate
	}
	r.slowTokens = min(r.slowTokens, max(1, r.slowRate*repointTick.Seconds()))
	r.lastTick = now
}

// sendDue sends the due packets the budget allows: first packets before
// repeats, in queue order, then the periodic round's within its own pace.
func (r *Repointer) sendDue(v *gossip.View, pols map[netip.Addr]policy.Policy, now time.Time) {
	failed, lastErr := 0, error(nil)
	try := func(q *queued) bool {
		spent, err := r.sendOne(q, v, pols, now)
		if err != nil {
			failed++
			lastErr = err
		}
		return spent
	}
	for _, firsts := range []bool{true, false} {
		for _, q := range r.queue {
			if r.tokens < 1 {
				break
			}
			if q.left == 0 || q.first.IsZero() != firsts || now.Before(q.next) {
				continue
			}
			try(q)
		}
	}
	r.sendSlow(try, now)
	if failed > 0 {
		r.cfg.Logger.Warn("re-pointing packets not sent, trying again", "packets", failed, "error", lastErr)
	}
}

// sendOne sends client q its due packet, unless it is no longer this
// host's or answered already, and says whether that took a packet from the
// budget.
func (r *Repointer) sendOne(q *queued, v *gossip.View, pols map[netip.Addr]policy.Policy, now time.Time) (bool, error) {
	vip, ip := r.addrs(q.key)
	c, known := r.cfg.Table.Get(vip, ip)
	if p := pols[vip]; !known || p == nil || !p.Claims(v, vip, ip) {
		q.left = 0
		return false, nil
	}
	if r.answered(c, q.first) {
		q.left = 0
		r.count(func(s *Status) { s.result(vip, true, 1) })
		return false, nil
	}
	r.tokens--
	if err := r.cfg.Send.Repoint(vip, c); err != nil {
		r.failed(q, now)
		return true, err
	}
	r.sent(q, now)
	return true, nil
}

// failed notes a packet that could not be sent: the interface may be down
// or reopening (a link flap), so the packet is owed still, for a while.
func (r *Repointer) failed(q *queued, now time.Time) {
	q.fails++
	q.next = now.Add(repointSpacing)
	if q.fails >= maxSendFailures {
		q.left = 0
	}
}

// sent notes a packet sent; after the client's last, it awaits an answer.
func (r *Repointer) sent(q *queued, now time.Time) {
	if q.first.IsZero() {
		q.first = now
	}
	q.left--
	q.next = now.Add(repointSpacing)
	if q.left == 0 {
		r.awaiting = append(r.awaiting, awaited{key: q.key, first: q.first, deadline: now.Add(confirmWait)})
	}
}

// report publishes what is left of the round for `arpshare status`.
func (r *Repointer) report() {
	packets, spread := 0, time.Duration(0)
	for _, q := range r.queue {
		packets += int(q.left)
		spread = max(spread, time.Duration(q.left-1)*repointSpacing)
	}
	r.count(func(s *Status) {
		s.Clients, s.Packets = len(r.queue), packets
		s.Remaining = max(spread, time.Duration(packets)*time.Second/time.Duration(r.cfg.Rate))
		s.Reasserting, s.ReassertRate = 0, 0
		if r.slow != nil {
			s.Reasserting = r.slow.left()
			s.ReassertRate = r.slowRate
		}
	})
}

// answered reports whether client c was heard since first, when its first
// packet went out: a client answers the request (or solicitation), and the
// responder learns the answer.
func (r *Repointer) answered(c arp.Client, first time.Time) bool {
	return !first.IsZero() && !c.LastSeen.Before(first)
}

// confirm counts the awaited clients whose time is up, as answered or not.
func (r *Repointer) confirm(now time.Time) {
	unanswered := 0
	i := 0
	for ; i < len(r.awaiting) && !now.Before(r.awaiting[i].deadline); i++ {
		a := r.awaiting[i]
		vip, ip := r.addrs(a.key)
		c, known := r.cfg.Table.Get(vip, ip)
		switch {
		case !known:
		case r.answered(c, a.first):
			r.count(func(s *Status) { s.result(vip, true, 1) })
		default:
			unanswered++
			r.count(func(s *Status) { s.result(vip, false, 1) })
			r.cfg.Logger.Debug("client did not answer its re-pointing requests", "vip_address", vip, "client", ip)
		}
	}
	r.awaiting = slices.Delete(r.awaiting, 0, i)
	// A client that left hours ago (the table keeps it for its TTL) is
	// asked at every periodic round: at steady state that is news for
	// debugging, and arpshare_repoint_clients_total{result="unanswered"}
	// counts it.
	if unanswered > 0 {
		r.cfg.Logger.Debug("clients did not answer re-pointing: gone, or dropping ARP requests from the VIP", "clients", unanswered)
	}
}

func (r *Repointer) count(f func(*Status)) {
	r.status.mu.Lock()
	defer r.status.mu.Unlock()
	f(&r.status.s)
}

// refute arranges for every VIP to be settled, with reassertRounds packets
// per client, settleDelay from now (or from the last view change after
// that), and at most once per refuteEvery. Refutations that come while one
// is pending join it: a stream of them neither adds rounds nor postpones
// the one due.
func (r *Repointer) refute(now time.Time) {
	if !r.refuteAt.IsZero() {
		return
	}
	r.refuteAt = now.Add(settleDelay)
	if !r.lastRefute.IsZero() {
		r.refuteAt = later(r.refuteAt, r.lastRefute.Add(refuteEvery))
	}
	r.cfg.Logger.Info("this host refuted a suspicion or its death: others may have taken its clients; re-asserting them once the views agree",
		"in", r.refuteAt.Sub(now))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// settle re-points, once, every client of the unsettled VIPs that this host
// holds, and announces those it announces.
func (r *Repointer) settle(v *gossip.View, now time.Time) {
	pols := r.policies()
	rounds := max(1, r.settleRounds)
	n := 0
	for c := range r.cfg.Table.All() {
		if p := pols[c.VIP]; r.unsettled[c.VIP] && p != nil && p.Holds(v, c.VIP, c.IP) && r.enqueue(c, rounds, now) {
			n++
		}
	}
	for vip := range r.unsettled {
		if _, ok := r.announce[vip]; !ok && pols[vip] != nil && pols[vip].Announces(v, vip) {
			r.announce[vip] = announcement{left: 1, next: now}
		}
	}
	if n > 0 {
		r.sortQueue()
		r.cfg.Logger.Debug("cluster settled: re-pointing this host's clients once more", "clients", n, "packets_each", rounds)
	}
	clear(r.unsettled)
	r.settleRounds = 0
}

// ViewDigest sums up who is eligible for each VIP in v, with their weights:
// hosts whose views have the same digest give every client the same owner.
// It is never 0 (gossip.Meta.Repointed's "none yet").
func ViewDigest(v *gossip.View) uint32 {
	if v == nil {
		return 1
	}
	var vips []netip.Addr
	for _, m := range v.Members {
		vips = append(vips, m.Meta.VIPs...)
		vips = append(vips, m.Meta.Unhealthy...)
	}
	slices.SortFunc(vips, netip.Addr.Compare)
	vips = slices.Compact(vips)
	h := xxhash.New()
	for _, vip := range vips {
		es := v.Eligible(vip)
		if len(es) == 0 {
			continue
		}
		a := vip.As16()
		h.Write(a[:])
		for _, c := range es {
			h.WriteString(c.Name)
			h.Write(binary.BigEndian.AppendUint32([]byte{0}, uint32(c.Weight)))
		}
	}
	if d := uint32(h.Sum64()); d != 0 {
		return d
	}
	return 1
}
