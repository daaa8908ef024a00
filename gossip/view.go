package gossip

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// MetaVersion is the version of the metadata format below.
const MetaVersion = 1

// MaxMetaSize is memberlist's limit on node metadata.
const MaxMetaSize = 512

// Meta is what each host tells the others about itself through gossip.
type Meta struct {
	Version   int          `json:"v"`
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

// DecodeMeta parses gossiped metadata. A version this build does not know is
// an error, so the host is shown but never trusted with clients.
func DecodeMeta(b []byte) (Meta, error) {
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}, fmt.Errorf("decode node metadata: %w", err)
	}
	if m.Version != MetaVersion {
		return m, fmt.Errorf("node metadata version %d, this build speaks %d", m.Version, MetaVersion)
	}
	if m.Algorithm != Algorithm {
		return m, fmt.Errorf("ownership algorithm %d, this build uses %d: upgrade every host", m.Algorithm, Algorithm)
	}
	return m, nil
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
	Err string `json:"error,omitempty"`
	// Unreachable: gossip still lists the member, but this host's own
	// probes of it have gone unanswered lately.
	Unreachable bool `json:"unreachable,omitempty"`
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

// Alive returns how many members are alive and reachable from here. Quorum
// counts these: a host cut off from the others stops hearing them within four
// probe rounds, but, with nobody to confirm its suspicions, takes the longest
// suspicion timeout to declare them dead. Counting them until then, it would
// keep a quorum long enough to re-point the first "dead" host's clients to
// itself.
func (v *View) Alive() int {
	n := 0
	for _, m := range v.Members {
		if m.State == StateAlive && !m.Unreachable {
			n++
		}
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
