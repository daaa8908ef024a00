package gossip

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// The gossip protocol's versions: MetaVersion is the one this build
// speaks, MinMetaVersion the oldest it still speaks. A host trusts a peer
// whose version is in its own range, or whose range (Meta.MinVersion to
// Meta.Version) holds this host's version: a newer release that still
// speaks this one. A release raises MetaVersion when it adds to the
// metadata or changes its meaning, and keeps MinMetaVersion at the
// previous minor release's, so that a cluster upgrades host by host
// (docs/operations.md, Upgrades). Fields a version adds are optional to
// the versions before it: JSON decoding leaves out what it does not know.
const (
	MetaVersion    = 1
	MinMetaVersion = 1
)

// MaxSoftwareLen bounds the software version a peer gossips.
const MaxSoftwareLen = 64

// MaxMetaSize is memberlist's limit on node metadata.
const MaxMetaSize = 512

// Meta is what each host tells the others about itself through gossip.
type Meta struct {
	Version int `json:"v"`
	// MinVersion is the oldest protocol version the host speaks; 0 (a
	// build from before it was gossiped) means Version alone.
	MinVersion int `json:"vm,omitempty"`
	// Software is the host's release, as `arpshare version` prints it.
	Software  string       `json:"s,omitempty"`
	Algorithm int          `json:"a"`
	Weight    int          `json:"w"`
	Draining  bool         `json:"d,omitempty"`
	VIPs      []netip.Addr `json:"h"`           // the VIPs this host serves and whose check passes
	Unhealthy []netip.Addr `json:"u,omitempty"` // the VIPs it serves whose check fails
	MACs      []string     `json:"m,omitempty"` // its serving interfaces' MACs
	// Leaving: the host asks to drain, or stops, and waits to see whether
	// other hosts stay eligible for its VIPs (see daemon.orphans). It
	// changes nobody's eligibility.
	Leaving bool `json:"l,omitempty"`
	// Repointed is the digest of the latest view whose re-pointing the host
	// has finished (0: none yet): a draining host waits until its peers
	// report the digest of its own view.
	Repointed uint32 `json:"r,omitempty"`
	// Seen is the digest of the members this host sees leaving
	// (LeavingDigest; 0: none): a leaving host learns from it that a peer
	// has seen it leave, and what the peer itself was doing then. Builds
	// before 0.1.0, which do not gossip Software, do not gossip it either.
	Seen uint32 `json:"k,omitempty"`
}

// Encode returns the metadata as gossiped, or an error if it is too large.
func (m Meta) Encode() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxMetaSize {
		return nil, fmt.Errorf("node metadata is %d bytes, more than memberlist's %d: too many VIPs", len(b), MaxMetaSize)
	}
	return b, nil
}

// Bounds on gossiped metadata. Every host's own metadata is within them
// (the daemon's config refuses a weight outside 1 to MaxWeight, and 512
// bytes hold fewer VIPs and MACs than these); a peer's that is not is
// rejected, as a whole.
const (
	// MaxWeight bounds a host's weight: the ownership function scores
	// weight hashes per candidate and client (arp/policy.Rendezvous).
	MaxWeight = 100
	// MaxMetaVIPs bounds the VIPs a host lists, healthy and unhealthy.
	MaxMetaVIPs = 64
	// MaxMetaMACs bounds its serving interfaces' MACs.
	MaxMetaMACs = 32
)

// Reasons a peer's metadata is rejected, as metric labels.
const (
	RejectDecode    = "decode"    // not metadata at all, or too large
	RejectVersion   = "version"   // a metadata version this build does not speak
	RejectAlgorithm = "algorithm" // another ownership function
	RejectWeight    = "weight"    // outside 1 to MaxWeight
	RejectVIPs      = "vips"      // too many, invalid, or listed twice
	RejectMACs      = "macs"      // too many, or not unicast EUI-48 addresses
)

// MetaError says why a peer's metadata is rejected.
type MetaError struct {
	Reason string // one of the Reject constants
	Msg    string
}

func (e *MetaError) Error() string { return e.Msg }

func metaErr(reason, format string, args ...any) *MetaError {
	return &MetaError{Reason: reason, Msg: fmt.Sprintf(format, args...)}
}

// DecodeMeta parses and checks gossiped metadata. Metadata this build cannot
// trust (another version or algorithm, values out of range) is an error, a
// *MetaError, so the host is shown but never trusted with clients; the
// metadata returned with it is whatever decoded, with its weight bounded.
func DecodeMeta(b []byte) (Meta, error) {
	if len(b) > MaxMetaSize {
		return Meta{}, metaErr(RejectDecode, "node metadata is %d bytes, more than %d", len(b), MaxMetaSize)
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}, metaErr(RejectDecode, "decode node metadata: %v", err)
	}
	err := m.check()
	m.Weight = min(max(m.Weight, 0), MaxWeight) // never shown or used beyond the bound
	if err != nil {
		return m, err
	}
	return m, nil
}

// check reports the first thing in m this build cannot trust.
func (m Meta) check() *MetaError {
	switch {
	case len(m.Software) > MaxSoftwareLen:
		return metaErr(RejectDecode, "software version of %d bytes, more than %d", len(m.Software), MaxSoftwareLen)
	case !m.Compatible():
		return metaErr(RejectVersion, "%s speaks gossip protocol %s, this build speaks %s: more than one minor release apart; upgrade the older hosts",
			orUnknown(m.Software), versionRange(m.MinVersion, m.Version), versionRange(MinMetaVersion, MetaVersion))
	case m.Algorithm != Algorithm:
		return metaErr(RejectAlgorithm, "ownership algorithm %d, this build uses %d: upgrade every host", m.Algorithm, Algorithm)
	case m.Weight < 1 || m.Weight > MaxWeight:
		return metaErr(RejectWeight, "weight %d out of range 1 to %d", m.Weight, MaxWeight)
	case len(m.VIPs)+len(m.Unhealthy) > MaxMetaVIPs:
		return metaErr(RejectVIPs, "%d VIPs, more than %d", len(m.VIPs)+len(m.Unhealthy), MaxMetaVIPs)
	case len(m.MACs) > MaxMetaMACs:
		return metaErr(RejectMACs, "%d MACs, more than %d", len(m.MACs), MaxMetaMACs)
	}
	seen := map[netip.Addr]bool{}
	for _, vip := range slices.Concat(m.VIPs, m.Unhealthy) {
		switch {
		case !vip.IsValid() || vip.IsUnspecified() || vip.IsMulticast() || vip.Zone() != "":
			return metaErr(RejectVIPs, "VIP %q is not a unicast address", vip)
		case seen[vip]:
			return metaErr(RejectVIPs, "VIP %s listed twice", vip)
		}
		seen[vip] = true
	}
	for _, s := range m.MACs {
		if err := checkMAC(s); err != "" {
			return metaErr(RejectMACs, "MAC %q: %s", s, err)
		}
	}
	return nil
}

// Compatible reports whether this build and the host that sent m speak a
// common protocol version.
func (m Meta) Compatible() bool {
	lo := m.MinVersion
	if lo == 0 || lo > m.Version {
		lo = m.Version
	}
	return (m.Version >= MinMetaVersion && m.Version <= MetaVersion) || (lo <= MetaVersion && m.Version > MetaVersion)
}

// versionRange names a range of protocol versions.
func versionRange(lo, hi int) string {
	if lo == 0 || lo >= hi {
		return fmt.Sprintf("version %d", hi)
	}
	return fmt.Sprintf("versions %d to %d", lo, hi)
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown release"
	}
	return s
}

// checkMAC says what is wrong with a gossiped MAC, or "": frames are
// rewritten to it (the handover), and a broadcast or multicast address
// would flood them to the whole segment.
func checkMAC(s string) string {
	hw, err := net.ParseMAC(s)
	switch {
	case err != nil || len(hw) != 6:
		return "not an EUI-48 address"
	case hw[0]&1 != 0:
		return "not unicast"
	case bytes.Equal(hw, make(net.HardwareAddr, 6)):
		return "zero"
	}
	return ""
}

// State is a member's liveness as memberlist reports it: alive until it is
// declared dead or leaves (memberlist does not say which, nor when it merely
// suspects a host).
type State string

// Member states.
const (
	StateAlive State = "alive"
	StateDead  State = "dead"
)

// Member is one host as seen in a View.
type Member struct {
	Name  string         `json:"name"`
	Addr  netip.AddrPort `json:"addr"`
	State State          `json:"state"`
	Meta  Meta           `json:"meta"`
	// Err says why the member's metadata is not trusted; empty when it is.
	// Reason is Err's kind, one of the Reject constants.
	Err    string `json:"error,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Unreachable: gossip still lists the member, but this host's own
	// probes of it have gone unanswered lately.
	Unreachable bool `json:"unreachable,omitempty"`
}

// LeavingDigest is the digest of the names of v's live members that are
// leaving (Meta.Leaving), self counted by selfLeaving rather than by v
// (its own metadata may not be back from gossip yet); 0 when none is.
// Each host gossips its own view's (Meta.Seen).
func LeavingDigest(v *View, self string, selfLeaving bool) uint32 {
	var names []string
	if selfLeaving {
		names = append(names, self)
	}
	if v != nil {
		for _, m := range v.Members {
			if m.Name != self && m.Live() && m.Meta.Leaving {
				names = append(names, m.Name)
			}
		}
	}
	if len(names) == 0 {
		return 0
	}
	slices.Sort(names)
	h := fnv.New32a()
	for _, n := range names {
		h.Write(append([]byte(n), 0))
	}
	if d := h.Sum32(); d != 0 {
		return d
	}
	return 1
}

// Live reports whether the member is up and trusted.
func (m Member) Live() bool {
	return m.State == StateAlive && m.Err == ""
}

// Serves reports whether the member serves vip, healthy or not.
func (m Member) Serves(vip netip.Addr) bool {
	return slices.Contains(m.Meta.VIPs, vip) || slices.Contains(m.Meta.Unhealthy, vip)
}

// View is an immutable snapshot of the cluster as this host sees it: the
// members, whether this host may serve, and the hosts eligible for each VIP.
// Every host holding the same members computes the same owners (arp/policy
// decides who answers which client).
type View struct {
	Self    string
	Members []Member // sorted by name
	// Expect is how many hosts the cluster should have; 0 means unknown.
	// With it set, a host that sees fewer than a majority answers nobody.
	Expect int
	// Hosts are the gossip addresses the configuration names (this
	// host's bind and its peers). When they are at least Expect, quorum
	// counts only members at these addresses: see Alive.
	Hosts []netip.AddrPort
	// Rejected says why this host's peers refuse it (wrong key, wrong
	// label, its name taken); empty when they do not. A rejected host
	// answers nobody: see Serving.
	Rejected string
	byVIP    map[netip.Addr][]Candidate
	fallback map[netip.Addr]bool
}

// NewView builds a view; the order of members does not matter.
//
// The hosts eligible for a VIP are the live, not draining ones whose check
// for it passes. If no host passes, every live, not draining host that
// serves the VIP is eligible: answering is better than silence.
func NewView(self string, members []Member, expect int) *View {
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	v := &View{Self: self, Members: ms, Expect: expect, byVIP: map[netip.Addr][]Candidate{}, fallback: map[netip.Addr]bool{}}
	add := func(vip netip.Addr, m Member) {
		if !slices.ContainsFunc(v.byVIP[vip], func(c Candidate) bool { return c.Name == m.Name }) {
			v.byVIP[vip] = append(v.byVIP[vip], Candidate{Name: m.Name, Weight: m.Meta.Weight})
		}
	}
	for _, m := range ms {
		if m.Live() && !m.Meta.Draining {
			for _, vip := range m.Meta.VIPs {
				add(vip, m)
			}
		}
	}
	for _, m := range ms {
		if m.Live() && !m.Meta.Draining {
			for _, vip := range m.Meta.Unhealthy {
				if len(v.byVIP[vip]) == 0 || v.fallback[vip] {
					v.fallback[vip] = true
					add(vip, m)
				}
			}
		}
	}
	return v
}

// Alive returns how many members count toward quorum: alive, reachable
// from here and trusted. A host cut off from the others stops hearing them
// within four probe rounds, but, with nobody to confirm its suspicions,
// takes the longest suspicion timeout to declare them dead. Counting them
// until then, it would keep a quorum long enough to re-point the first
// "dead" host's clients to itself.
//
// With Expect set and at least Expect configured Hosts, only members at a
// configured address count, each address once: a key holder can make up
// any number of members, but not answer probes at the addresses of hosts
// on the other side of a partition, so made-up members never give a
// minority its quorum. A host added to the cluster counts once the
// others' configuration names it (docs/sharing.md, Partitions).
func (v *View) Alive() int {
	strict := v.Expect > 0 && len(v.Hosts) >= v.Expect
	counted := map[netip.AddrPort]bool{}
	n := 0
	for _, m := range v.Members {
		if m.State != StateAlive || m.Unreachable || m.Err != "" {
			continue
		}
		if strict {
			if !slices.Contains(v.Hosts, m.Addr) || counted[m.Addr] {
				continue
			}
			counted[m.Addr] = true
		}
		n++
	}
	return n
}

// Quorum reports whether this host sees a majority of the expected hosts.
func (v *View) Quorum() bool {
	return v != nil && (v.Expect == 0 || v.Alive() >= v.Expect/2+1)
}

// Serving reports whether this host may answer and re-point clients at all:
// it has a quorum and its peers do not refuse it.
func (v *View) Serving() bool {
	return v != nil && v.Rejected == "" && v.Quorum()
}

// Join states, as `arpshare status` shows them.
const (
	JoinMember   = "member"   // in the cluster, with other live members
	JoinAlone    = "alone"    // no live peer: they do not answer at all
	JoinRejected = "rejected" // peers answer but refuse this host
)

// JoinState says whether this host is a member of its cluster, alone, or
// rejected by its peers.
func (v *View) JoinState() string {
	switch {
	case v.Rejected != "":
		return JoinRejected
	case slices.ContainsFunc(v.Members, func(m Member) bool { return m.Name != v.Self && m.State == StateAlive }):
		return JoinMember
	default:
		return JoinAlone
	}
}

// Fallback reports whether no host is healthy for vip, so that every live
// host serving it is eligible.
func (v *View) Fallback(vip netip.Addr) bool { return v != nil && v.fallback[vip] }

// Eligible returns the hosts that may answer for vip.
func (v *View) Eligible(vip netip.Addr) []Candidate {
	if v == nil {
		return nil
	}
	return v.byVIP[vip]
}

// PeerMACs is every MAC the members gossip, this host's included: frames
// from them are a cluster member's, not a client's.
func (v *View) PeerMACs() map[[6]byte]bool {
	out := map[[6]byte]bool{}
	if v == nil {
		return out
	}
	for _, m := range v.Members {
		for _, s := range m.Meta.MACs {
			if mac, err := net.ParseMAC(s); err == nil && len(mac) == 6 {
				out[[6]byte(mac)] = true
			}
		}
	}
	return out
}

// Member returns the named member.
func (v *View) Member(name string) (Member, bool) {
	if v == nil {
		return Member{}, false
	}
	i := slices.IndexFunc(v.Members, func(m Member) bool { return m.Name == name })
	if i < 0 {
		return Member{}, false
	}
	return v.Members[i], true
}

// Algorithm is the version of the ownership function (arp/policy's
// Rendezvous). It travels in every host's metadata: hosts that hash
// differently would answer the same clients, so a host running another
// algorithm is never eligible in this host's view.
const Algorithm = 1

// Candidate is a host that may answer for a VIP, with its share.
type Candidate struct {
	Name   string
	Weight int
}
