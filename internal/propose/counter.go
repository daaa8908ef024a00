// Package propose proposes router addresses for vip.routers
// (node.propose_routers): it watches the first segments of new TCP
// connections to the VIPs, and a neighbour whose frames carry connections
// from Threshold distinct source addresses to a VIP forwards for others: a
// router. `arpshare status` shows it as proposed for that VIP; nothing is
// applied.
package propose

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

const (
	// Threshold is how many distinct source addresses a neighbour's new
	// connections to a VIP must carry to be proposed: a host on the
	// segment speaks from its own address or two.
	Threshold = 4
	// MaxNeighbours bounds the neighbours counted, over all VIPs.
	MaxNeighbours = 256
	// Forget is how long a neighbour with no new connection is kept (and
	// a proposal shown).
	Forget = 10 * time.Minute
	// Rate is how many segments a second are counted, at most (a burst of
	// as many); the rest are dropped as rate_limited.
	Rate = 200
	// lookupEvery spaces the lookups of a proposed neighbour's address
	// that found none (the client table scan is not free).
	lookupEvery = time.Minute
)

// Outcomes of a segment, as counted.
const (
	Counted     = "counted"      // counted for its neighbour
	RateLimited = "rate_limited" // over Rate
	TableFull   = "table_full"   // a new neighbour, MaxNeighbours held
	FromCluster = "from_cluster" // from a cluster member's MAC (a spread flow)
	Listed      = "listed"       // from a router the VIP lists already
	NotVIP      = "not_vip"      // to an address that is not a watched VIP
	BadFrame    = "bad_frame"    // not an Ethernet IPv4 or IPv6 TCP segment
)

// Proposal is a neighbour that forwards other hosts' connections to a VIP.
type Proposal struct {
	// Addresses are those it asked for the VIP from (the client table's),
	// to list in vip.routers; empty while it has not asked.
	Addresses []netip.Addr `json:"addresses"`
	MAC       string       `json:"mac"`
	Sources   int          `json:"sources"` // distinct sources seen, up to Threshold
	LastSeen  time.Time    `json:"last_seen"`
}

type key struct {
	vip netip.Addr
	mac [6]byte
}

type neighbour struct {
	sources []netip.Addr // distinct, up to Threshold
	addrs   []netip.Addr // once proposed
	looked  time.Time    // the last address lookup
	checked bool         // looked up since the last config change
	listed  bool         // a router the VIP lists: not counted
	last    time.Time
}

// Counter counts the distinct sources each neighbour's new connections to
// each VIP carry. It is safe for concurrent use.
type Counter struct {
	now    func() time.Time
	lookup func(vip netip.Addr, mac [6]byte) []netip.Addr
	listed func(vip netip.Addr, mac [6]byte, addrs []netip.Addr) bool

	mu     sync.Mutex
	seen   map[key]*neighbour
	peers  map[[6]byte]bool
	tokens float64
	filled time.Time
	counts map[string]uint64
}

// NewCounter returns a Counter that finds a proposed neighbour's addresses
// with lookup, and leaves out those listed says the VIP lists already.
func NewCounter(lookup func(vip netip.Addr, mac [6]byte) []netip.Addr, listed func(vip netip.Addr, mac [6]byte, addrs []netip.Addr) bool) *Counter {
	return &Counter{now: time.Now, lookup: lookup, listed: listed, seen: map[key]*neighbour{}, peers: map[[6]byte]bool{}, tokens: Rate, counts: map[string]uint64{}}
}

// SetPeers gives the cluster members' MACs: their frames carry the flows
// a director spreads, not a router's.
func (c *Counter) SetPeers(peers map[[6]byte]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.peers = peers
}

// Drop counts a segment dropped before Observe, by outcome.
func (c *Counter) Drop(outcome string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts[outcome]++
}

// Observe counts a new connection from src to vip in a frame from mac,
// and returns its outcome.
func (c *Counter) Observe(vip netip.Addr, mac [6]byte, src netip.Addr) string {
	c.mu.Lock()
	now := c.now()
	outcome, look := c.observe(now, key{vip, mac}, src)
	c.counts[outcome]++
	c.mu.Unlock()
	if look {
		// Outside the lock: status need not wait for the scan.
		addrs := c.lookup(vip, mac)
		listed := c.listed(vip, mac, addrs)
		c.mu.Lock()
		if n := c.seen[key{vip, mac}]; n != nil {
			n.addrs, n.listed = addrs, listed
		}
		c.mu.Unlock()
	}
	return outcome
}

// observe does Observe's counting with c.mu held; look says the
// neighbour's addresses are to be looked up.
func (c *Counter) observe(now time.Time, k key, src netip.Addr) (outcome string, look bool) {
	if c.peers[k.mac] {
		return FromCluster, false
	}
	n := c.seen[k]
	if n != nil && n.listed {
		// Before the rate: a busy listed router must not starve the
		// counting of one that is not listed yet.
		n.last = now
		return Listed, false
	}
	// The token bucket fills as time passes: no timer.
	c.tokens = min(Rate, c.tokens+now.Sub(c.filled).Seconds()*Rate)
	c.filled = now
	if c.tokens < 1 {
		return RateLimited, false
	}
	c.tokens--
	if n == nil {
		if len(c.seen) >= MaxNeighbours && !c.evict(now) {
			return TableFull, false
		}
		n = &neighbour{}
		c.seen[k] = n
	}
	n.last = now
	if len(n.sources) < Threshold && !slices.Contains(n.sources, src) {
		n.sources = append(n.sources, src)
	}
	if len(n.sources) == Threshold && (!n.checked || len(n.addrs) == 0 && now.Sub(n.looked) >= lookupEvery) {
		n.looked, n.checked = now, true
		return Counted, true
	}
	return Counted, false
}

// evict removes the neighbour seen least recently, if it is forgotten.
func (c *Counter) evict(now time.Time) bool {
	var oldest key
	var at time.Time
	for k, n := range c.seen {
		if at.IsZero() || n.last.Before(at) {
			oldest, at = k, n.last
		}
	}
	if now.Sub(at) < Forget {
		return false
	}
	delete(c.seen, oldest)
	return true
}

// Proposed returns vip's proposals: the neighbours seen within Forget
// whose connections carried Threshold sources, but the routers it lists,
// sorted by MAC.
func (c *Counter) Proposed(vip netip.Addr) []Proposal {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	var out []Proposal
	for k, n := range c.seen {
		if k.vip != vip || len(n.sources) < Threshold || now.Sub(n.last) >= Forget || c.peers[k.mac] || c.listed(vip, k.mac, n.addrs) {
			continue
		}
		out = append(out, Proposal{Addresses: slices.Clone(n.addrs), MAC: net.HardwareAddr(k.mac[:]).String(), Sources: len(n.sources), LastSeen: n.last})
	}
	slices.SortFunc(out, func(a, b Proposal) int { return strings.Compare(a.MAC, b.MAC) })
	return out
}

// Counts returns the segments seen, by outcome.
func (c *Counter) Counts() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]uint64, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

// Reset drops every neighbour of VIPs not in keep, and has the others
// looked up again, against the config now in force.
func (c *Counter) Reset(keep map[netip.Addr]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, n := range c.seen {
		if !keep[k.vip] {
			delete(c.seen, k)
		}
		n.checked, n.listed = false, false
	}
}
