package gossip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/arpshare/arpshare/internal/clock"
)

// ClusterConfig configures a Cluster.
type ClusterConfig struct {
	Name           string
	Bind           netip.AddrPort
	Peers          []netip.AddrPort
	Keys           [][]byte // AES keys, the first one in use; none: unencrypted
	KeyFile        string   // where Keys came from, to name it in errors
	Label          string
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	SuspicionMult  int
	GossipInterval time.Duration
	// RejoinInterval is how often peers missing from the cluster are joined
	// again: memberlist alone never merges a partition that lasted longer
	// than it remembers dead hosts.
	RejoinInterval time.Duration
	// Expect is the number of hosts the cluster should have (0: unknown);
	// see View.Expect.
	Expect int
	// Meta returns this host's current metadata. Its MinVersion, if
	// zero, and Software, if empty, are filled in as gossiped.
	Meta func() Meta
	// Software is this host's release, gossiped in Meta.Software (cut to
	// MaxSoftwareLen).
	Software string
	// State, if set, is exchanged with peers: in full when a host joins,
	// and what changed lately on every periodic push-pull.
	State SharedState
	// OnChange is called, from Run's goroutine, with every new view.
	OnChange func(*View)
	// OnRefute, if set, is called when this host learns from a peer's
	// state that the peer took it for suspect or dead: memberlist refutes
	// it then, and this host's view does not change, while the peer may
	// have moved its clients away meanwhile (see merges). Called from
	// memberlist's goroutines: it must not block.
	OnRefute func()
	Logger   *slog.Logger
	// Transport, if set, carries memberlist's messages instead of UDP and
	// TCP sockets on Bind: tests run a cluster in memory over
	// memberlist.MockNetwork. Bind must then be the address the transport
	// advertises, as peers know this host by it.
	Transport memberlist.Transport
	// Clock, if set, is the time the cluster's own decisions read: its
	// loop's tickers, the holds and checks of deaths in doubt, the
	// windows of unreachable members, of rechecks and of name conflicts,
	// its lateness, and its log budget. Tests drive those with a fake;
	// nil is the real clock. Memberlist's own timers, and deadlines on
	// sockets, are real whatever it is.
	Clock clock.Clock
}

// SharedState is exchanged between hosts by memberlist's push-pull: each
// host sends its own and merges the others'.
type SharedState interface {
	// LocalState returns what to send a peer: everything if since is
	// zero (the peer joins, or heals from a partition), else only what
	// changed after since.
	LocalState(since time.Time) []byte
	// MergeState takes a peer's state: everything it has if join is set,
	// else what changed there lately.
	MergeState(b []byte, join bool)
}

// Cluster keeps this host in the gossip cluster and its View up to date.
type Cluster struct {
	cfg     ClusterConfig
	clock   clock.Clock
	probes  prober            // how verify checks a member
	streams *watchedTransport // memberlist's, set by Run
	ready   chan struct{}
	changed chan struct{}
	rejoin  chan struct{} // the peers changed: join them now

	// memberlist calls the delegates with its own lock held, and they take
	// mu: never call into memberlist while holding mu.
	mu     sync.Mutex
	ml     *memberlist.Memberlist
	peers  []netip.AddrPort // cfg.Peers until SetPeers
	expect int              // cfg.Expect until SetPeers
	// reconfigured: SetPeers changed them, and the next view is news even
	// with the same members.
	reconfigured bool
	view         *View
	live         map[string]Member    // as memberlist last reported them
	departed     map[string]Member    // dead or left, as last reported
	diedAt       map[string]time.Time // when each departed member was reported
	joinErr      map[string]string    // last join error by peer
	refused      map[string]string    // why each peer that answered refused this host
	heard        map[string]time.Time // last probe ack, by member
	changeAt     time.Time            // when the view last changed
	// A member memberlist reports dead stays alive in the view until this
	// time while the report is in doubt (see events.NotifyLeave, verify).
	hold      map[string]time.Time
	toVerify  []string             // held, and not yet pinged
	rechecked map[string]time.Time // when each dead member was last joined, or is next (recheckDead)
	// Members back from a death this host counted, since when: each is
	// told so (tellCounted).
	owed map[string]time.Time
	// Another host claimed this host's name; see rejection.
	conflictAt   time.Time
	conflictWith string
	// Until then, this host counts itself slow (and says so once): its
	// timers ran late, or memberlist's health score says its probes fail
	// because of itself.
	doubtUntil time.Time
	lagAt      time.Time // when it last ran late

	probedAt atomic.Int64 // Unix ns of the last probe of this host by a peer
	logs     *logLimiter  // memberlist's log lines
	refutes  atomic.Uint64
	// tableOut and tableIn count the client-table state of push-pulls,
	// before memberlist encrypts it: [0] periodic
	// exchanges, [1] joins.
	tableOut, tableIn [2]stateCount

	heartbeat atomic.Int64 // Unix ns of the last loop turn
	updating  sync.Mutex   // one metadata update at a time
	unsent    atomic.Bool  // the last update's broadcast was not confirmed
	left      atomic.Bool  // Leave was called: updates go nowhere now
}

// Heartbeat returns when the cluster's loop last turned (every probe
// interval while it is healthy).
func (c *Cluster) Heartbeat() time.Time { return time.Unix(0, c.heartbeat.Load()) }

// LastChange returns when the view last changed.
func (c *Cluster) LastChange() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changeAt
}

// HealthScore is memberlist's awareness of its own health: 0 is good,
// higher means this host's probes fail in ways that point at itself.
func (c *Cluster) HealthScore() int {
	c.mu.Lock()
	ml := c.ml
	c.mu.Unlock()
	if ml == nil {
		return 0
	}
	return ml.GetHealthScore()
}

// NewCluster returns a cluster member; Run starts it.
func NewCluster(cfg ClusterConfig) *Cluster {
	if cfg.RejoinInterval == 0 {
		cfg.RejoinInterval = 10 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	c := &Cluster{
		cfg:       cfg,
		clock:     cfg.Clock,
		ready:     make(chan struct{}),
		changed:   make(chan struct{}, 1),
		rejoin:    make(chan struct{}, 1),
		view:      NewView(cfg.Name, nil, cfg.Expect),
		peers:     cfg.Peers,
		expect:    cfg.Expect,
		live:      map[string]Member{},
		departed:  map[string]Member{},
		diedAt:    map[string]time.Time{},
		joinErr:   map[string]string{},
		refused:   map[string]string{},
		heard:     map[string]time.Time{},
		hold:      map[string]time.Time{},
		rechecked: map[string]time.Time{},
		owed:      map[string]time.Time{},
		logs:      newLogLimiter(),
	}
	c.probes = liveProber{c}
	return c
}

func (c *Cluster) String() string { return "gossip on " + c.cfg.Bind.String() }

// Ready is closed once memberlist listens.
func (c *Cluster) Ready() <-chan struct{} { return c.ready }

// View returns the current view of the cluster.
func (c *Cluster) View() *View {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.view
}

// Run joins the cluster and keeps the view current until ctx ends, then shuts
// memberlist down (without leaving: call Leave first for a graceful stop).
func (c *Cluster) Run(ctx context.Context) error {
	mc, err := c.memberlistConfig()
	if err != nil {
		return err
	}
	if err := c.plug(mc); err != nil {
		return fmt.Errorf("start gossip on %s: %w", c.cfg.Bind, err)
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("start gossip on %s: %w", c.cfg.Bind, err)
	}
	c.mu.Lock()
	c.ml = ml
	c.mu.Unlock()
	defer ml.Shutdown()
	if len(c.cfg.Keys) == 0 {
		c.cfg.Logger.Warn("GOSSIP IS NOT ENCRYPTED: any machine on the segment can join this cluster (insecure = true)")
	}
	// Join before the first view: push-pull with the peers brings their
	// members and shared state in during Join, so the first view this host
	// acts on already holds the whole cluster. Acting on a view of only
	// itself would make it claim every client it hears of.
	c.join()
	c.rebuild()
	close(c.ready)
	return c.loop(ctx)
}

// memberlistConfig is memberlist's configuration for this host: its
// address, timings and keys.
func (c *Cluster) memberlistConfig() (*memberlist.Config, error) {
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.cfg.Name
	mc.BindAddr = c.cfg.Bind.Addr().String()
	mc.BindPort = int(c.cfg.Bind.Port())
	mc.AdvertiseAddr = mc.BindAddr
	mc.AdvertisePort = mc.BindPort
	mc.ProbeInterval = c.cfg.ProbeInterval
	mc.ProbeTimeout = c.cfg.ProbeTimeout
	mc.SuspicionMult = c.cfg.SuspicionMult
	mc.GossipInterval = c.cfg.GossipInterval
	mc.TCPTimeout = 2 * time.Second // a LAN answers far sooner; joins wait on it
	mc.PushPullInterval = PushPullInterval
	mc.Label = c.cfg.Label
	// memberlist compresses every message with a new LZW writer, pings and
	// acks too: at rest most of what the daemon allocates. A peer's
	// compressed messages are read all the same.
	mc.EnableCompression = false
	if len(c.cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(c.cfg.Keys, c.cfg.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip keys: %w", err)
		}
		mc.Keyring = kr
	}
	return mc, nil
}

// plug connects memberlist to this cluster: the delegates that feed the
// view, the logger, and the transport (the one given, or UDP and TCP
// sockets), watched for why peers refuse this host.
func (c *Cluster) plug(mc *memberlist.Config) error {
	mc.Delegate = delegate{c}
	mc.Events = events{c}
	mc.Ping = pings{c}
	mc.Conflict = conflicts{c}
	mc.Merge = merges{c}
	mc.Logger = log.New(logWriter{l: c.cfg.Logger, limit: c.logs, clock: c.clock}, "", 0)
	t := c.cfg.Transport
	if t == nil {
		nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{mc.BindAddr}, BindPort: mc.BindPort, Logger: mc.Logger,
		})
		if err != nil {
			return fmt.Errorf("could not set up network transport: %w", err)
		}
		if mc.BindPort == 0 {
			mc.BindPort = nt.GetAutoBindPort()
			mc.AdvertisePort = mc.BindPort
		}
		t = nt
	}
	c.streams = watchTransport(t)
	mc.Transport = c.streams
	return nil
}

// loop keeps the view current until ctx ends.
func (c *Cluster) loop(ctx context.Context) error {
	// memberlist reports joins and deaths as events, but not suspicion:
	// look at the members every probe interval as well. The same tick
	// measures how late this host runs (see lagged).
	poll := c.clock.NewTicker(c.cfg.ProbeInterval)
	defer poll.Stop()
	// Deaths in doubt are checked each on a goroutine of its own: a ping
	// waits for its timeout.
	var verifying sync.WaitGroup
	defer verifying.Wait()
	rebuild := func() {
		for _, name := range c.rebuild() {
			verifying.Go(func() { c.verify(ctx, name) })
		}
	}
	rejoin := c.clock.NewTicker(c.cfg.RejoinInterval)
	defer rejoin.Stop()
	// The rechecks of dead members go with every recheckEvery-th poll, and
	// only while one died recently: no timer of their own.
	polls := 0
	// A join waits for TCP to unreachable peers, and an update for its
	// broadcast: never in this loop. Each has its own token, so that a
	// recheck never holds up a join.
	joining, rechecking, resyncing, telling := newSingle(), newSingle(), newSingle(), newSingle()
	defer joining.wait()
	defer rechecking.wait()
	defer resyncing.wait()
	defer telling.wait()
	for {
		waiting := c.clock.Now()
		c.heartbeat.Store(waiting.UnixNano())
		select {
		case <-ctx.Done():
			return nil
		case <-c.changed:
			rebuild()
			// A peer leaving waits for the others' Meta.Seen: say at once.
			if !c.left.Load() && c.metaStale() {
				resyncing.start(func() { c.UpdateMeta(time.Second) })
			}
		case tick := <-poll.C():
			now := c.clock.Now()
			if lag, ok := lagged(now, tick, waiting); ok {
				// memberlist's lock, never held while it calls this package.
				c.checkSelf(lag, c.ml.GetHealthScore())
			}
			if c.due(now) {
				rebuild()
			}
			if polls++; polls%recheckEvery == 0 && c.diedRecently() {
				rechecking.start(c.recheckDead)
			}
			if c.owesNotice() {
				telling.start(c.tellCounted)
			}
			if !c.left.Load() && (c.unsent.Load() || c.metaStale()) {
				resyncing.start(func() {
					c.cfg.Logger.Debug("gossiping this host's metadata again: the last update was lost or overtaken")
					c.UpdateMeta(time.Second)
				})
			}
		case <-rejoin.C():
			joining.start(c.join)
		case <-c.rejoin:
			joining.start(c.join)
		}
	}
}

// single runs a task on a goroutine of its own, one at a time: start does
// nothing while the last run goes on.
type single struct {
	runs  sync.WaitGroup
	token chan struct{}
}

func newSingle() *single {
	s := &single{token: make(chan struct{}, 1)}
	s.token <- struct{}{}
	return s
}

func (s *single) start(task func()) {
	select {
	case <-s.token:
		s.runs.Go(func() {
			task()
			s.token <- struct{}{}
		})
	default: // the last run is still going
	}
}

// wait waits for the run going on, if any.
func (s *single) wait() { s.runs.Wait() }

// A member declared dead is contacted again, for recheckFor, by every host
// (recheckGap apart, checked every recheckEvery probe intervals). A host
// that was cut off briefly (a link flap) never hears that it was declared
// dead: the death was gossiped while it could not hear, and peers no longer
// probe it. It keeps answering its clients, which the others re-pointed to
// themselves, and nobody tells it. A push-pull with it (a join) shows it
// its death, it refutes at once, and each side re-asserts its clients
// (daemon.Repointer); without this, the next periodic re-join, up to
// RejoinInterval later, does it.
const (
	recheckEvery = 2
	recheckFor   = time.Minute
	recheckHeld  = time.Second
	// recheckLoad bounds the joins a dead member gets from all hosts
	// together, per second.
	recheckLoad = 8
)

// recheckGap is how long this host waits between two joins of one dead
// member. A join is a TCP push-pull of the whole state, and every host
// rechecks every member it counts dead: a falsely dead member gets n-1 of
// them per gap, and a busy cluster, its members starved into false
// deaths, is loaded into more (64 hosts on two cores never settled), so
// the gap grows with the cluster to keep them under recheckLoad a second.
// A member whose death is still held (verify checks it) gets one a second
// at most: it answers, so it hears of its death by gossip too, as any
// member that UDP reaches does. Call with mu held.
func (c *Cluster) recheckGap(held bool) time.Duration {
	gap := max(recheckEvery*c.cfg.ProbeInterval, time.Duration(len(c.live))*time.Second/recheckLoad)
	if held {
		gap = max(gap, recheckHeld)
	}
	return gap
}

// recheckDead joins the members that died less than recheckFor ago, each
// once per recheckGap; the first time at a random point of the first gap,
// and later ones a little late at random, so that the hosts, which all
// heard of the death at once, do not all join the member at once.
func (c *Cluster) recheckDead() {
	var wg sync.WaitGroup
	for _, a := range c.recheckTargets(c.clock.Now()) {
		// A dead host does not answer: that is expected, and not logged.
		wg.Go(func() { c.ml.Join([]string{a}) })
	}
	wg.Wait()
}

// recheckTargets returns the addresses of the dead members to join at
// now, and notes them joined.
func (c *Cluster) recheckTargets(now time.Time) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var addrs []string
	for name, m := range c.departed {
		if now.Sub(c.diedAt[name]) >= recheckFor {
			continue
		}
		_, held := c.hold[name]
		gap := c.recheckGap(held)
		last, ok := c.rechecked[name]
		if !ok {
			last = now.Add(-rand.N(gap))
			c.rechecked[name] = last
		}
		if now.Sub(last) < gap {
			continue
		}
		c.rechecked[name] = now.Add(rand.N(gap/4 + 1))
		addrs = append(addrs, m.Addr.String())
	}
	return addrs
}

// diedRecently reports whether a member died less than recheckFor ago:
// then recheckDead has someone to contact.
func (c *Cluster) diedRecently() bool {
	now := c.clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for name := range c.departed {
		if now.Sub(c.diedAt[name]) < recheckFor {
			return true
		}
	}
	return false
}

// join contacts every configured peer that is not a live member.
func (c *Cluster) join() {
	// memberlist tries peers one after another, each up to its TCP timeout;
	// a dead peer must not hold up the live ones.
	var wg sync.WaitGroup
	for _, p := range c.missing() {
		wg.Go(func() {
			_, err := c.ml.Join([]string{p})
			c.mu.Lock()
			defer c.mu.Unlock()
			if why := c.refusal(p, err); why != "" {
				c.refused[p] = why
			} else {
				delete(c.refused, p)
			}
			// Say it once per peer and cause, not every rejoin.
			switch {
			case err != nil && c.joinErr[p] != err.Error():
				c.cfg.Logger.Warn("cannot join peer", "peer", p, "error", strings.TrimSpace(err.Error()))
				c.joinErr[p] = err.Error()
			case err == nil && c.joinErr[p] != "":
				c.cfg.Logger.Info("joined peer", "peer", p)
				delete(c.joinErr, p)
			}
		})
	}
	wg.Wait()
}

// missing are the configured peers that join contacts: those that are not
// live members, or all of them while this host is rejected.
func (c *Cluster) missing() []string {
	v := c.View()
	live := map[netip.AddrPort]bool{}
	for _, m := range v.Members {
		if m.State == StateAlive {
			live[m.Addr] = true
		}
	}
	// A rejected host asks every peer again, so that it learns as soon as
	// they take it (or, with its name taken, that they still do not).
	rejected := v.Rejected != ""
	c.mu.Lock()
	peers := c.peers
	c.mu.Unlock()
	var missing []string
	for _, p := range peers {
		if p != c.cfg.Bind && (!live[p] || rejected) {
			missing = append(missing, p.String())
		}
	}
	return missing
}

// UpdateMeta gossips this host's metadata again, after Meta changed.
func (c *Cluster) UpdateMeta(timeout time.Duration) error {
	c.mu.Lock()
	ml := c.ml
	c.mu.Unlock()
	// After Leave, an update would tell the others this host is back.
	if ml == nil || c.left.Load() {
		return nil
	}
	// memberlist reads the metadata before it numbers the update: two
	// concurrent updates can publish the older metadata last.
	c.updating.Lock()
	defer c.updating.Unlock()
	err := ml.UpdateNode(timeout)
	// memberlist's broadcast queue can drop a queued message when two
	// collide on its internal key (hashicorp/memberlist#263, #324), and
	// then never confirms it: the peers would not learn of this update
	// until the next push-pull. Until one is confirmed, send it again.
	c.unsent.Store(err != nil)
	c.signal()
	return err
}

// ownMeta is this host's metadata as gossiped: cfg.Meta's, with the
// protocol range, the release and what it sees leaving filled in.
func (c *Cluster) ownMeta() Meta {
	meta := c.cfg.Meta()
	if meta.MinVersion == 0 && meta.Version == MetaVersion {
		meta.MinVersion = MinMetaVersion
	}
	if meta.Software == "" {
		meta.Software = c.cfg.Software[:min(len(c.cfg.Software), MaxSoftwareLen)]
	}
	meta.Seen = LeavingDigest(c.View(), c.cfg.Name, meta.Leaving)
	return meta
}

// metaStale reports whether what gossip says of this host differs from its
// metadata now: an update was lost or overtaken. The loop asks every probe
// interval: it compares fields, not encodings, which cost two JSON
// encodings a turn.
func (c *Cluster) metaStale() bool {
	want := c.ownMeta()
	c.mu.Lock()
	self, ok := c.live[c.cfg.Name]
	c.mu.Unlock()
	if !ok || sameMeta(self.Meta, want) {
		return false
	}
	_, err := want.Encode() // one too large is never gossiped: not stale
	return err == nil
}

// sameMeta reports whether a and b gossip the same: a nil list and an
// empty one say the same.
func sameMeta(a, b Meta) bool {
	return a.Version == b.Version && a.MinVersion == b.MinVersion && a.Software == b.Software &&
		a.Algorithm == b.Algorithm && a.Weight == b.Weight && a.Draining == b.Draining &&
		slices.Equal(a.VIPs, b.VIPs) && slices.Equal(a.Unhealthy, b.Unhealthy) && slices.Equal(a.MACs, b.MACs) &&
		a.Leaving == b.Leaving && a.Repointed == b.Repointed && a.Seen == b.Seen
}

// Leave tells the cluster this host is going, so it is not taken for dead.
func (c *Cluster) Leave(timeout time.Duration) error {
	c.mu.Lock()
	ml := c.ml
	c.mu.Unlock()
	if ml == nil {
		return nil
	}
	c.left.Store(true)
	return ml.Leave(timeout)
}

func (c *Cluster) signal() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// rebuild publishes a new view from what memberlist last reported, and
// returns the members whose reported death this host must check itself.
func (c *Cluster) rebuild() (verify []string) {
	c.mu.Lock()
	window := c.probeWindow()
	now := c.clock.Now()
	var members []Member
	for name, m := range c.live {
		if _, ok := c.heard[name]; !ok {
			c.heard[name] = now // new: give it a round to answer
		}
		m.Unreachable = name != c.cfg.Name && now.Sub(c.heard[name]) > window
		members = append(members, m)
		delete(c.hold, name)
		delete(c.rechecked, name)
	}
	for name, m := range c.departed {
		if _, ok := c.live[name]; ok {
			continue
		}
		until, held := c.hold[name]
		switch {
		case held && now.Before(until):
			// Not proven dead yet (see doubt), but reachable only while
			// it answers this host's pings: quorum must not count a
			// member this host cannot reach.
			m.State = StateAlive
			m.Unreachable = now.Sub(c.heard[name]) > window
		case held:
			delete(c.hold, name)
			delete(c.rechecked, name)
			fallthrough
		default:
			delete(c.heard, name)
		}
		members = append(members, m)
	}
	v := NewView(c.cfg.Name, members, c.expect)
	v.Hosts = c.hosts()
	v.Rejected = c.rejection(now, window)
	changed := !sameView(c.view, v) || c.reconfigured
	c.reconfigured = false
	was := c.view.Rejected
	c.view = v
	if changed {
		c.changeAt = now
	}
	verify, c.toVerify = c.toVerify, nil
	c.mu.Unlock()
	switch {
	case v.Rejected != "" && v.Rejected != was:
		c.cfg.Logger.Error("REJECTED by the cluster: this host answers no client until its peers take it", "cause", v.Rejected)
	case v.Rejected == "" && was != "":
		c.cfg.Logger.Info("no longer rejected: answering again", "state", v.JoinState())
	}
	if changed && c.cfg.OnChange != nil {
		c.cfg.OnChange(v)
	}
	return verify
}

// SetPeers applies a reloaded gossip.peers and gossip.expect: the next view
// counts quorum with them, and peers not yet in the cluster are joined now
// (in the background: a join waits for peers that do not answer). A member
// no longer named stays a member while it lives, and stops counting toward
// quorum once the configuration names at least expect hosts without it.
func (c *Cluster) SetPeers(peers []netip.AddrPort, expect int) {
	c.mu.Lock()
	same := slices.Equal(c.peers, peers) && c.expect == expect
	c.peers, c.expect = slices.Clone(peers), expect
	c.reconfigured = true
	running := c.ml != nil
	c.mu.Unlock()
	if same {
		return
	}
	c.signal()
	if running {
		select {
		case c.rejoin <- struct{}{}:
		default:
		}
	}
}

// hosts are the gossip addresses the configuration names, each once. Call
// with mu held.
func (c *Cluster) hosts() []netip.AddrPort {
	hs := []netip.AddrPort{c.cfg.Bind}
	for _, p := range c.peers {
		if !slices.Contains(hs, p) {
			hs = append(hs, p)
		}
	}
	return hs
}

// probeWindow is how long a member may go without acking this host's
// probes before it counts as unreachable, and this host without being probed
// before it counts as unknown to its peers. memberlist probes each member
// once per round of n-1 probe intervals, so four rounds without an ack means
// none came, even on a busy host. It must stay shorter than the longest
// suspicion (with no peer to confirm it), 6 x suspicion_mult probe
// intervals, so that a cut-off host notices before it declares the others
// dead. Call with mu held.
func (c *Cluster) probeWindow() time.Duration {
	return 4*time.Duration(max(1, len(c.live)-1))*c.cfg.ProbeInterval + 2*c.cfg.ProbeTimeout
}

// maxHold is how long a reported death stays in doubt at most: memberlist's
// longest suspicion (6 x suspicion_mult probe intervals), time enough for a
// member wrongly reported dead to hear of it and refute it.
func (c *Cluster) maxHold() time.Duration {
	return 6 * time.Duration(max(1, c.cfg.SuspicionMult)) * c.cfg.ProbeInterval
}

// rejection says why this host's peers refuse it, or "" if they do not.
// Call with mu held.
//
// A host with no live peer whose peers answered its join and refused it is
// rejected: wrong key, wrong label, or not arpshare at all. A host whose
// name another host claims is rejected unless its peers probe it, which
// shows that the name is theirs for this host: memberlist tells both hosts
// of the conflict, and only the member is probed.
func (c *Cluster) rejection(now time.Time, window time.Duration) string {
	probed := time.Unix(0, c.probedAt.Load())
	if now.Sub(c.conflictAt) < 3*c.cfg.RejoinInterval && now.Sub(probed) > window {
		return fmt.Sprintf("node name %q is taken by the live member at %s: give this host a name of its own ([node] name)", c.cfg.Name, c.conflictWith)
	}
	for name, m := range c.live {
		if name != c.cfg.Name && m.State == StateAlive {
			return ""
		}
	}
	peers := slices.Sorted(maps.Keys(c.refused))
	if len(peers) == 0 {
		return ""
	}
	return c.refused[peers[0]]
}

// refusal says why peer refused this host's join, or "" when it took it or
// is merely down, from how the stream to it went (see joinwatch.go): a
// dial that failed, or a peer that never answered in time, is down; one
// that hung up without a word refuses this host's label; one that answered
// refuses its key (or its lack of one).
func (c *Cluster) refusal(peer string, err error) string {
	if err == nil {
		return ""
	}
	var f *streamFate
	if c.streams != nil {
		f = c.streams.fate(peer)
	}
	keyFile := c.cfg.KeyFile
	if keyFile == "" {
		keyFile = "the gossip key file"
	}
	switch {
	case f == nil || f.dialErr != nil:
		return ""
	case !f.answered() && hangUp(f.readErr):
		return fmt.Sprintf("peer %s hangs up on this host: its cluster label is not %q, or it is not arpshare; set gossip.cluster to the cluster's label", peer, c.cfg.Label)
	case !f.answered():
		return "" // no answer in time: a peer that is down or hung
	case f.encrypted() && len(c.cfg.Keys) > 0:
		return fmt.Sprintf("gossip key does not match peer %s: copy %s from a cluster member", peer, keyFile)
	case f.encrypted():
		return fmt.Sprintf("peer %s encrypts gossip and this host does not: copy the cluster's key to this host and set gossip.key_file", peer)
	case len(c.cfg.Keys) > 0:
		return fmt.Sprintf("peer %s does not encrypt gossip and this host does: use the same gossip.key_file (or insecure) on every host", peer)
	}
	return fmt.Sprintf("peer %s refuses this host: %s", peer, strings.TrimSpace(err.Error()))
}

// lagged returns how late the loop's tick came, if it came while the loop
// waited (since waiting): a tick that waited for the loop's own work (a
// view built and handed on) would count that work against this host, and
// is not a measure.
func lagged(now, tick, waiting time.Time) (time.Duration, bool) {
	if tick.Before(waiting) {
		return 0, false
	}
	return now.Sub(tick), true
}

// due reports whether a view built now could differ from the current one
// while memberlist reported nothing: a member's time to answer this host's
// probes ran out, or one that had not answered did, a held death's time
// ran out, or the reason peers refuse this host changed. Events and
// reconfigurations signal changed; so the loop's tick builds (and
// allocates) a view only when one of these is so.
func (c *Cluster) due(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	window := c.probeWindow()
	if c.rejection(now, window) != c.view.Rejected {
		return true
	}
	for _, m := range c.view.Members {
		if heard, ok := c.heard[m.Name]; ok && m.Name != c.cfg.Name && (now.Sub(heard) > window) != m.Unreachable {
			return true
		}
		if until, held := c.hold[m.Name]; held && !now.Before(until) {
			return true
		}
	}
	return false
}

// checkSelf notes when this host cannot trust its own verdicts on others:
// its loop ran lag late (so memberlist's timers and the acks it waits for
// did too: a starved CPU, a throttled cgroup, a long pause), or memberlist's
// health score (Lifeguard's local health awareness) says its probes fail
// because of this host: its peers' nacks came late or not at all. Every
// death is checked before it counts (see verify), and while this host runs
// late a failed check proves nothing, so that stale suspicions never
// re-point healthy peers' clients to this host.
//
// score is memberlist's health score as lag was measured.
func (c *Cluster) checkSelf(lag time.Duration, score int) {
	now := c.clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	// Without two peers to send nacks, memberlist counts every failed
	// probe against itself: its score then says nothing about this host.
	if lag < c.cfg.ProbeTimeout/2 && (score == 0 || len(c.live) < 3) {
		return
	}
	if lag >= c.cfg.ProbeTimeout/2 {
		c.lagAt = now
	}
	if now.After(c.doubtUntil) {
		c.cfg.Logger.Warn("this host is slow: while it runs late, the deaths it hears of stay in doubt",
			"lag", lag.Round(time.Millisecond), "health_score", score, "for", c.maxHold())
	}
	c.doubtUntil = now.Add(c.maxHold())
}

// maxSlowHold bounds how long a member reported dead stays held because its
// daemon still holds its gossip port while it answers no ping (see verify):
// a daemon that busy for that long is as good as dead, and a hung one is
// killed by systemd's watchdog well before.
const maxSlowHold = 10 * time.Second

// verify checks a member reported dead while its death is held in doubt. Each
// round pings it (memberlist's Ping, answered by its daemon) and, at the same
// time, opens a TCP connection to its gossip port (reach: answered by its
// kernel, however starved its daemon is), both within the probe timeout:
//
//   - the ping answered: the member is alive and reachable, and stays;
//   - only the connection: its daemon lives but is too busy or starved to
//     answer in time; it stays, unreachable;
//   - refused: its host is up and nothing listens there: the daemon is
//     gone, and the death counts at once;
//   - neither, twice in a row (one lost ping on a busy segment is not a
//     death: two are): its host is off the network, and the death counts,
//     unless this host ran late in the last two probe intervals (then its
//     own check may be what was late, and the hold goes on for as long as
//     it keeps running late).
//
// A member that stays is checked again every probe interval until it
// refutes the report through gossip (memberlist then lists it again), for at
// most maxSlowHold.
func (c *Cluster) verify(ctx context.Context, name string) {
	c.cfg.Logger.Debug("checking a member reported dead before it counts: checking it", "member", name)
	start := c.clock.Now()
	misses, said := 0, ""
	for ctx.Err() == nil {
		addr, doubt, held := c.stillHeld(name)
		if !held {
			return
		}
		pinged, reached := c.probes.probe(name, addr)
		switch {
		case pinged:
			misses = 0
			now := c.clock.Now()
			c.mu.Lock()
			c.heard[name] = now
			c.mu.Unlock()
			c.extendHold(name, start)
			if said != "ping" {
				c.cfg.Logger.Info("a member reported dead answers this host's ping: keeping it until it refutes the report", "member", name)
				said = "ping"
			}
		case reached == reachOpen:
			misses = 0
			c.extendHold(name, start)
			if said != "port" {
				c.cfg.Logger.Info("a member reported dead answers no ping, but its daemon holds its gossip port (busy or starved): keeping it until it refutes the report", "member", name)
				said = "port"
			}
		case reached == reachClosed:
			// Certain, however late this host runs.
			c.cfg.Logger.Debug("a member reported dead has no daemon on its gossip port: it is dead", "member", name)
			c.endHold(name)
			return
		default:
			if misses++; misses >= 2 && !doubt {
				c.endHold(name)
				return
			}
			continue
		}
		// It answered: check again, but seldom. Every host checks every
		// held member; a check each probe interval, from each of them,
		// is more than a starved daemon can take.
		if !c.clock.Sleep(ctx, max(c.cfg.ProbeInterval, recheckHeld)) {
			return
		}
	}
}

// stillHeld says whether a member's death is still held in doubt, where to
// check it, and whether this host ran late in the last two probe intervals
// (then the hold lasts while it does, as its own check may be what is late).
func (c *Cluster) stillHeld(name string) (addr netip.AddrPort, doubt, held bool) {
	now := c.clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	m, departed := c.departed[name]
	until, held := c.hold[name]
	doubt = now.Sub(c.lagAt) < 2*c.cfg.ProbeInterval
	if doubt && departed && held {
		until = now.Add(c.maxHold())
		c.hold[name] = until
	}
	return m.Addr, doubt, departed && held && !now.After(until)
}

// prober checks a member whose death is in doubt (see verify).
type prober interface {
	// probe pings the member by name, and at the same time connects to
	// its gossip port at addr, both within the probe timeout.
	probe(name string, addr netip.AddrPort) (pinged bool, reached reachResult)
}

// liveProber checks a member through memberlist and the network.
type liveProber struct{ c *Cluster }

func (p liveProber) probe(name string, addr netip.AddrPort) (bool, reachResult) {
	c := p.c
	c.mu.Lock()
	ml := c.ml
	c.mu.Unlock()
	var reached reachResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		reached = c.reach(addr, c.cfg.ProbeTimeout)
	}()
	_, err := ml.Ping(name, net.UDPAddrFromAddrPort(addr))
	<-done
	return err == nil, reached
}

// extendHold keeps a member that answered verify's check held for the
// longest suspicion time from now (at least until after the next check), and
// no longer than maxSlowHold after its check began.
func (c *Cluster) extendHold(name string, start time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	until, ok := c.hold[name]
	if !ok {
		return
	}
	// Till after the next check, however short the suspicion.
	ext := c.clock.Now().Add(max(c.maxHold(), 2*recheckHeld))
	if limit := start.Add(maxSlowHold); ext.After(limit) {
		ext = limit
	}
	if ext.After(until) {
		c.hold[name] = ext
	}
}

// endHold lets a held death count.
func (c *Cluster) endHold(name string) {
	c.mu.Lock()
	delete(c.hold, name)
	delete(c.rechecked, name)
	c.mu.Unlock()
	c.signal()
}

type reachResult int

const (
	reachNone   reachResult = iota // no answer in time, or no route: the host is off the network
	reachOpen                      // the handshake completed: the daemon holds its port
	reachClosed                    // refused: the host is up, its daemon is not
)

// reach opens a TCP connection to addr, a member's gossip port, from this
// host's gossip address, within timeout. The member's kernel completes the
// handshake however busy its daemon is; memberlist there takes the
// connection when it gets to it, and an empty stream after the cluster's
// label is dropped without a word.
//
// With a Transport configured, the connection goes through it: the member's
// gossip port is wherever the transport carries its streams, and a socket
// on the member's address belongs to nobody (a refusal there would count
// every reported death at once).
func (c *Cluster) reach(addr netip.AddrPort, timeout time.Duration) reachResult {
	var conn net.Conn
	var err error
	if c.cfg.Transport != nil {
		conn, err = c.cfg.Transport.DialTimeout(addr.String(), timeout)
	} else {
		d := net.Dialer{Timeout: timeout}
		if b := c.cfg.Bind.Addr(); b.IsValid() && !b.IsUnspecified() {
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(b, 0))
		}
		conn, err = d.Dial("tcp", addr.String())
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return reachClosed
	}
	if err != nil {
		return reachNone
	}
	conn.SetDeadline(time.Now().Add(timeout)) // the socket's clock: real
	memberlist.AddLabelHeaderToStream(conn, c.cfg.Label)
	conn.Close()
	return reachOpen
}

func sameView(a, b *View) bool {
	return slices.EqualFunc(a.Members, b.Members, func(x, y Member) bool {
		return x.Name == y.Name && x.Addr == y.Addr && x.State == y.State && x.Err == y.Err && x.Unreachable == y.Unreachable &&
			x.Meta.Weight == y.Meta.Weight && x.Meta.Draining == y.Meta.Draining &&
			slices.Equal(x.Meta.VIPs, y.Meta.VIPs) && slices.Equal(x.Meta.Unhealthy, y.Meta.Unhealthy) &&
			slices.Equal(x.Meta.MACs, y.Meta.MACs)
	})
}

func member(n *memberlist.Node) Member {
	addr, _ := netip.AddrFromSlice(n.Addr)
	// memberlist never updates the exported Node.State: the members it
	// lists are alive, and NotifyLeave says otherwise.
	m := Member{Name: n.Name, Addr: netip.AddrPortFrom(addr.Unmap(), n.Port), State: StateAlive}
	meta, err := DecodeMeta(n.Meta)
	m.Meta = meta
	if err != nil {
		m.Err, m.Reason = err.Error(), RejectDecode
		var bad *MetaError
		if errors.As(err, &bad) {
			m.Reason = bad.Reason
		}
	}
	return m
}

// delegate and events are called by memberlist with its locks held: they
// record and signal, and never block.
type delegate struct{ c *Cluster }

func (d delegate) NodeMeta(limit int) []byte {
	meta := d.c.ownMeta()
	b, err := meta.Encode()
	if err != nil || len(b) > limit {
		d.c.cfg.Logger.Error("node metadata does not fit", "error", err, "limit", limit)
		return nil
	}
	if bad := meta.check(); bad != nil {
		d.c.cfg.Logger.Error("this host's metadata is out of range: its peers reject it and give it no clients", "reason", bad.Reason, "error", bad.Msg)
	}
	return b
}

// NotifyMsg takes a peer's word that it counted this host dead
// (tellCounted). memberlist delivers user messages only from a member: they
// are encrypted and labelled like all gossip.
func (d delegate) NotifyMsg(b []byte) {
	if bytes.Equal(b, countedDead) && !d.c.left.Load() {
		d.c.refuted()
	}
}

func (d delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// PushPullInterval is how often memberlist exchanges state with a random
// peer (its LAN default); it stretches the interval in clusters of more
// than 32 hosts, as changesWindow follows.
const PushPullInterval = 30 * time.Second

// changesWindow is how far back a periodic push-pull reaches: a change is
// offered in every exchange for four push-pull intervals, so that each host
// hears it first or second hand. Memberlist scales the interval by
// log2(n/32)+1 above 32 hosts; so does this.
func changesWindow(n int) time.Duration {
	scale := 1.0
	if n > 32 {
		scale = math.Ceil(math.Log2(float64(n))-math.Log2(32)) + 1
	}
	return time.Duration(4 * scale * float64(PushPullInterval))
}

// LocalState is memberlist asking what to send in a push-pull. Sending the
// whole client table every time is 17 bytes a client per exchange (and
// memberlist refuses more than 20 MB): only a joining peer gets it all.
func (d delegate) LocalState(join bool) []byte {
	if d.c.cfg.State == nil {
		return nil
	}
	var b []byte
	if join {
		b = d.c.cfg.State.LocalState(time.Time{})
	} else {
		d.c.mu.Lock()
		n := len(d.c.live)
		d.c.mu.Unlock()
		// The shared state stamps its changes with the real time.
		b = d.c.cfg.State.LocalState(time.Now().Add(-changesWindow(n)))
	}
	d.c.tableOut[kindOf(join)].add(len(b))
	return b
}

func (d delegate) MergeRemoteState(buf []byte, join bool) {
	d.c.tableIn[kindOf(join)].add(len(buf))
	if d.c.cfg.State != nil {
		d.c.cfg.State.MergeState(buf, join)
	}
}

// stateCount counts push-pull states and their bytes.
type stateCount struct{ n, bytes atomic.Uint64 }

func (s *stateCount) add(bytes int) {
	s.n.Add(1)
	s.bytes.Add(uint64(bytes))
}

func kindOf(join bool) int {
	if join {
		return 1
	}
	return 0
}

// events copy what they are told: the nodes memberlist passes (and lists in
// Members) change under its lock after the call returns.
type events struct{ c *Cluster }

func (e events) NotifyJoin(n *memberlist.Node) {
	m := member(n)
	e.c.mu.Lock()
	if old, ok := e.c.departed[n.Name]; ok && n.Name != e.c.cfg.Name && !old.Meta.Draining {
		if _, held := e.c.hold[n.Name]; !held {
			e.c.owed[n.Name] = e.c.clock.Now()
		}
	}
	e.c.live[n.Name] = m
	delete(e.c.departed, n.Name)
	delete(e.c.diedAt, n.Name)
	e.c.mu.Unlock()
	e.c.signal()
}

func (e events) NotifyUpdate(n *memberlist.Node) { e.NotifyJoin(n) }

func (e events) NotifyLeave(n *memberlist.Node) {
	m := member(n)
	m.State = StateDead
	now := e.c.clock.Now()
	e.c.mu.Lock()
	if old, ok := e.c.live[n.Name]; ok && n.Name != e.c.cfg.Name && !old.Meta.Draining {
		// Every death of a member that may have clients is in doubt until
		// this host has checked it (verify): memberlist's timings are
		// short, and a busy or starved member, or a starved peer acting
		// on stale suspicions, makes it report deaths that are not. Keep
		// the member as it was until verify settles it. A draining
		// member has no clients, and one that stops drains first.
		e.c.hold[n.Name] = now.Add(e.c.maxHold())
		e.c.toVerify = append(e.c.toVerify, n.Name)
		m = old
		m.State = StateDead
	}
	delete(e.c.live, n.Name)
	e.c.departed[n.Name] = m
	e.c.diedAt[n.Name] = now
	e.c.mu.Unlock()
	e.c.signal()
}

type pings struct{ c *Cluster }

// AckPayload is called as this host answers a peer's probe: the peer counts
// it as a member.
func (p pings) AckPayload() []byte {
	p.c.probedAt.Store(p.c.clock.Now().UnixNano())
	return nil
}

func (p pings) NotifyPingComplete(other *memberlist.Node, _ time.Duration, _ []byte) {
	now := p.c.clock.Now()
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	p.c.heard[other.Name] = now
}

// conflicts hears of two hosts claiming one name; see rejection.
type conflicts struct{ c *Cluster }

func (f conflicts) NotifyConflict(existing, other *memberlist.Node) {
	if existing.Name != f.c.cfg.Name {
		return // two other hosts: they sort it out
	}
	addr, _ := netip.AddrFromSlice(other.Addr)
	f.c.mu.Lock()
	defer f.c.mu.Unlock()
	f.c.conflictAt = f.c.clock.Now()
	f.c.conflictWith = netip.AddrPortFrom(addr.Unmap(), other.Port).String()
	f.c.cfg.Logger.Error("another host claims this host's node name", "name", f.c.cfg.Name, "other", f.c.conflictWith)
}

// countedDead is the message a host sends a member back from a death it
// counted: it moved the member's clients, and the member must take them
// back, whatever way it heard of its death.
var countedDead = []byte("arpshare: counted dead/1")

// owesNotice reports whether a member back from a counted death is yet to
// be told.
func (c *Cluster) owesNotice() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.owed) > 0
}

// tellCounted tells each member back from a death this host counted that
// it did (NotifyMsg there). The push-pull of a join (merges) tells it too,
// but a member that heard of its death by gossip first has refuted it by
// then, and nobody joins it: this is how it still learns that its clients
// were moved. A member that cannot be told is tried again every probe
// interval for recheckFor.
func (c *Cluster) tellCounted() {
	todo := c.stillOwed(c.clock.Now())
	c.mu.Lock()
	ml := c.ml
	c.mu.Unlock()
	for _, o := range todo {
		err := ml.SendReliable(&memberlist.Node{Name: o.name, Addr: o.at.Addr().AsSlice(), Port: o.at.Port()}, countedDead)
		if err != nil {
			c.cfg.Logger.Debug("cannot tell a member back from a counted death: trying again", "member", o.name, "error", err)
			continue
		}
		c.mu.Lock()
		delete(c.owed, o.name)
		c.mu.Unlock()
	}
}

// owed is a member to tell that this host counted its death.
type owed struct {
	name string
	at   netip.AddrPort
}

// stillOwed are the members tellCounted tells at now: those back from a
// counted death for at most recheckFor, and still live; the others are
// forgotten.
func (c *Cluster) stillOwed(now time.Time) []owed {
	c.mu.Lock()
	defer c.mu.Unlock()
	var todo []owed
	for name, since := range c.owed {
		m, live := c.live[name]
		if !live || now.Sub(since) > recheckFor {
			delete(c.owed, name)
			continue
		}
		todo = append(todo, owed{name, m.Addr})
	}
	return todo
}

// merges reads each join's push-pull, in either direction: the peer's
// state, member by member, as memberlist is about to merge it.
type merges struct{ c *Cluster }

// NotifyMerge calls OnRefute when the peer lists this host as suspect, dead
// or left: memberlist refutes that as it merges (a higher incarnation), and
// the peer may have moved this host's clients while this host's own view did
// not change. A peer that counted this host's death joins it every
// recheckEvery probe intervals (recheckDead), so this is how a host that was
// cut off, or too busy to answer, learns that it was taken for dead. A
// push-pull is encrypted and labelled like all gossip: a stranger without
// the key cannot send one, and a datagram cannot carry one.
func (f merges) NotifyMerge(peers []*memberlist.Node) error {
	for _, p := range peers {
		if p.Name == f.c.cfg.Name && p.State != memberlist.StateAlive && !f.c.left.Load() {
			f.c.refuted()
			break
		}
	}
	return nil
}

// refuted counts a refutation and tells OnRefute.
func (c *Cluster) refuted() {
	c.refutes.Add(1)
	c.cfg.Logger.Debug("a peer took this host for failed: memberlist refutes it")
	if c.cfg.OnRefute != nil {
		c.cfg.OnRefute()
	}
}
