package gossip

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// ClusterConfig configures a Cluster.
type ClusterConfig struct {
	Name           string
	Bind           netip.AddrPort
	Peers          []netip.AddrPort
	Keys           [][]byte // AES keys, the first one in use; none: unencrypted
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
	// Meta returns this host's current metadata.
	Meta func() Meta
	// State, if set, is exchanged in full with peers on join and every push-pull.
	State SharedState
	// OnChange is called, from Run's goroutine, with every new view.
	OnChange func(*View)
	// OnRefute, if set, is called when this host refutes a suspicion or
	// its own death. memberlist has no event for it (it only logs it), and
	// this host's view does not change, while the others may have moved its
	// clients away meanwhile. Called with memberlist's locks held: it must
	// not block.
	OnRefute func()
	Logger   *slog.Logger
}

// SharedState is exchanged between hosts by memberlist's push-pull: each
// host sends its own and merges the others'.
type SharedState interface {
	MarshalBinary() ([]byte, error)
	MergeState(b []byte)
}

// Cluster keeps this host in the gossip cluster and its View up to date.
type Cluster struct {
	cfg     ClusterConfig
	ready   chan struct{}
	changed chan struct{}

	// memberlist calls the delegates with its own lock held, and they take
	// mu: never call into memberlist while holding mu.
	mu       sync.Mutex
	ml       *memberlist.Memberlist
	view     *View
	live     map[string]Member    // as memberlist last reported them
	departed map[string]Member    // dead or left, as last reported
	diedAt   map[string]time.Time // when each departed member was reported
	joinErr  map[string]string    // last join error by peer
	heard    map[string]time.Time // last probe ack, by member
	changeAt time.Time            // when the view last changed

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
	return &Cluster{
		cfg:      cfg,
		ready:    make(chan struct{}),
		changed:  make(chan struct{}, 1),
		view:     NewView(cfg.Name, nil, cfg.Expect),
		live:     map[string]Member{},
		departed: map[string]Member{},
		diedAt:   map[string]time.Time{},
		joinErr:  map[string]string{},
		heard:    map[string]time.Time{},
	}
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
	mc.Label = c.cfg.Label
	if len(c.cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(c.cfg.Keys, c.cfg.Keys[0])
		if err != nil {
			return fmt.Errorf("gossip keys: %w", err)
		}
		mc.Keyring = kr
	}
	mc.Delegate = delegate{c}
	mc.Events = events{c}
	mc.Ping = pings{c}
	mc.Logger = log.New(logWriter{l: c.cfg.Logger, refuted: c.cfg.OnRefute}, "", 0)

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

	// memberlist reports joins and deaths as events, but not suspicion:
	// look at the members every probe interval as well.
	poll := time.NewTicker(c.cfg.ProbeInterval)
	defer poll.Stop()
	rejoin := time.NewTicker(c.cfg.RejoinInterval)
	defer rejoin.Stop()
	recheck := time.NewTicker(recheckEvery * c.cfg.ProbeInterval)
	defer recheck.Stop()
	// A join waits for TCP to unreachable peers, and an update for its
	// broadcast: never in this loop.
	var joining, resync sync.WaitGroup
	defer joining.Wait()
	defer resync.Wait()
	resyncing := make(chan struct{}, 1)
	resyncing <- struct{}{}
	joined := make(chan struct{}, 1)
	joined <- struct{}{}
	for {
		c.heartbeat.Store(time.Now().UnixNano())
		select {
		case <-ctx.Done():
			return nil
		case <-c.changed:
			c.rebuild()
		case <-poll.C:
			c.rebuild()
			if c.left.Load() || !c.unsent.Load() && !c.metaStale() {
				continue
			}
			select {
			case <-resyncing:
				resync.Go(func() {
					c.cfg.Logger.Debug("gossiping this host's metadata again: the last update was lost or overtaken")
					c.UpdateMeta(time.Second)
					resyncing <- struct{}{}
				})
			default:
			}
		case <-rejoin.C:
			select {
			case <-joined:
				joining.Go(func() {
					c.join()
					joined <- struct{}{}
				})
			default: // the last join is still running
			}
		case <-recheck.C:
			select {
			case <-joined:
				joining.Go(func() {
					c.recheckDead()
					joined <- struct{}{}
				})
			default:
			}
		}
	}
}

// A member declared dead is contacted again every recheckEvery probe
// intervals for recheckFor. A host that was cut off briefly (a link flap)
// never hears that it was declared dead: the death was gossiped while it
// could not hear, and peers no longer probe it. It keeps answering its
// clients, which the others re-pointed to themselves, and nobody tells it.
// A push-pull with it (a join) shows it its death, it refutes at once, and
// each side re-asserts its clients (daemon.Repointer); without this, the
// next periodic re-join, up to RejoinInterval later, does it.
const (
	recheckEvery = 2
	recheckFor   = time.Minute
)

// recheckDead joins the members that died less than recheckFor ago.
func (c *Cluster) recheckDead() {
	c.mu.Lock()
	var addrs []string
	for name, m := range c.departed {
		if time.Since(c.diedAt[name]) < recheckFor {
			addrs = append(addrs, m.Addr.String())
		}
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, a := range addrs {
		// A dead host does not answer: that is expected, and not logged.
		wg.Go(func() { c.ml.Join([]string{a}) })
	}
	wg.Wait()
}

// join contacts every configured peer that is not a live member.
func (c *Cluster) join() {
	live := map[netip.AddrPort]bool{}
	for _, m := range c.View().Members {
		if m.State == StateAlive {
			live[m.Addr] = true
		}
	}
	var missing []string
	for _, p := range c.cfg.Peers {
		if p != c.cfg.Bind && !live[p] {
			missing = append(missing, p.String())
		}
	}
	if len(missing) == 0 {
		return
	}
	// memberlist tries peers one after another, each up to its TCP timeout;
	// a dead peer must not hold up the live ones.
	var wg sync.WaitGroup
	for _, p := range missing {
		wg.Go(func() {
			_, err := c.ml.Join([]string{p})
			c.mu.Lock()
			defer c.mu.Unlock()
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

// UpdateMeta gossips this host's metadata again, after Meta changed.
func (c *Cluster) UpdateMeta(timeout time.Duration) error {
	c.mu.Lock()
	ml := c.ml
	c.mu.Unlock()
	if ml == nil {
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

// metaStale reports whether what gossip says of this host differs from its
// metadata now: an update was lost or overtaken.
func (c *Cluster) metaStale() bool {
	want, err := c.cfg.Meta().Encode()
	if err != nil {
		return false
	}
	c.mu.Lock()
	self, ok := c.live[c.cfg.Name]
	c.mu.Unlock()
	if !ok {
		return false
	}
	have, err := self.Meta.Encode()
	return err == nil && string(have) != string(want)
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

func (c *Cluster) rebuild() {
	c.mu.Lock()
	// A member counts as reachable while this host's probes of it get
	// acks: memberlist probes each member once per round of n-1 probe
	// intervals, so four rounds without an ack means none came, even on a
	// busy host. It must stay shorter than the longest suspicion (with no
	// peer to confirm it), 6 x suspicion_mult probe intervals, so that a
	// cut-off host notices before it declares the others dead.
	window := 4*time.Duration(max(1, len(c.live)-1))*c.cfg.ProbeInterval + 2*c.cfg.ProbeTimeout
	now := time.Now()
	var members []Member
	for name, m := range c.live {
		if _, ok := c.heard[name]; !ok {
			c.heard[name] = now // new: give it a round to answer
		}
		m.Unreachable = name != c.cfg.Name && now.Sub(c.heard[name]) > window
		members = append(members, m)
	}
	for name, m := range c.departed {
		delete(c.heard, name)
		if _, ok := c.live[name]; !ok {
			members = append(members, m)
		}
	}
	v := NewView(c.cfg.Name, members, c.cfg.Expect)
	changed := !sameView(c.view, v)
	c.view = v
	if changed {
		c.changeAt = now
	}
	c.mu.Unlock()
	if changed && c.cfg.OnChange != nil {
		c.cfg.OnChange(v)
	}
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
		m.Err = err.Error()
	}
	return m
}

// delegate and events are called by memberlist with its locks held: they
// record and signal, and never block.
type delegate struct{ c *Cluster }

func (d delegate) NodeMeta(limit int) []byte {
	b, err := d.c.cfg.Meta().Encode()
	if err != nil || len(b) > limit {
		d.c.cfg.Logger.Error("node metadata does not fit", "error", err, "limit", limit)
		return nil
	}
	return b
}

func (d delegate) NotifyMsg([]byte)                           {}
func (d delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

func (d delegate) LocalState(join bool) []byte {
	if d.c.cfg.State == nil {
		return nil
	}
	b, err := d.c.cfg.State.MarshalBinary()
	if err != nil {
		d.c.cfg.Logger.Warn("encode local state", "error", err)
	}
	return b
}

func (d delegate) MergeRemoteState(buf []byte, join bool) {
	if d.c.cfg.State != nil {
		d.c.cfg.State.MergeState(buf)
	}
}

// events copy what they are told: the nodes memberlist passes (and lists in
// Members) change under its lock after the call returns.
type events struct{ c *Cluster }

func (e events) NotifyJoin(n *memberlist.Node) {
	m := member(n)
	e.c.mu.Lock()
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
	e.c.mu.Lock()
	delete(e.c.live, n.Name)
	e.c.departed[n.Name] = m
	e.c.diedAt[n.Name] = time.Now()
	e.c.mu.Unlock()
	e.c.signal()
}

type pings struct{ c *Cluster }

func (p pings) AckPayload() []byte { return nil }

func (p pings) NotifyPingComplete(other *memberlist.Node, _ time.Duration, _ []byte) {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	p.c.heard[other.Name] = time.Now()
}

// logWriter turns memberlist's "[LEVEL] memberlist: ..." lines into slog,
// and calls refuted, if set, when memberlist says it refutes a suspect or
// dead message about this host.
type logWriter struct {
	l       *slog.Logger
	refuted func()
}

func (w logWriter) Write(p []byte) (int, error) {
	msg := string(bytes.TrimSpace(p))
	level := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{"[DEBUG] ": slog.LevelDebug, "[INFO] ": slog.LevelInfo, "[WARN] ": slog.LevelWarn, "[ERR] ": slog.LevelError} {
		if rest, ok := bytes.CutPrefix([]byte(msg), []byte(prefix)); ok {
			msg, level = string(rest), l
		}
	}
	w.l.Log(context.Background(), level, msg)
	if w.refuted != nil && (strings.Contains(msg, "Refuting a suspect message") || strings.Contains(msg, "Refuting a dead message")) {
		w.refuted()
	}
	return len(p), nil
}
