package gossip

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
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
	VIPs      []netip.Addr `json:"h"`           // the VIPs this host is ready to serve
	MACs      []string     `json:"m,omitempty"` // its serving interfaces' MACs
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

// State is a member's liveness as memberlist reports it.
type State string

// Member states.
const (
	StateAlive   State = "alive"
	StateSuspect State = "suspect"
	StateDead    State = "dead"
	StateLeft    State = "left"
)

// Member is one host as seen in a View.
type Member struct {
	Name  string         `json:"name"`
	Addr  netip.AddrPort `json:"addr"`
	State State          `json:"state"`
	Meta  Meta           `json:"meta"`
	// Err says why the member's metadata is not trusted; empty when it is.
	Err string `json:"error,omitempty"`
}

// Eligible reports whether the member may answer clients of vip.
func (m Member) Eligible(vip netip.Addr) bool {
	// A suspect host still counts: memberlist suspects on one lost probe, and
	// moving clients away and back on every blip costs more than the short
	// wait for the verdict.
	live := m.State == StateAlive || m.State == StateSuspect
	return live && m.Err == "" && !m.Meta.Draining && slices.Contains(m.Meta.VIPs, vip)
}

// View is an immutable snapshot of the cluster as this host sees it. Every
// host holding the same members computes the same owners.
type View struct {
	Self    string
	Members []Member // sorted by name
	byVIP   map[netip.Addr][]Candidate
}

// NewView builds a view; the order of members does not matter.
func NewView(self string, members []Member) *View {
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b Member) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	v := &View{Self: self, Members: ms, byVIP: map[netip.Addr][]Candidate{}}
	for _, m := range ms {
		for _, vip := range m.Meta.VIPs {
			if m.Eligible(vip) && !slices.ContainsFunc(v.byVIP[vip], func(c Candidate) bool { return c.Name == m.Name }) {
				v.byVIP[vip] = append(v.byVIP[vip], Candidate{Name: m.Name, Weight: m.Meta.Weight})
			}
		}
	}
	return v
}

// Eligible returns the hosts that may answer for vip, by name.
func (v *View) Eligible(vip netip.Addr) []Candidate {
	if v == nil {
		return nil
	}
	return v.byVIP[vip]
}

// Owner returns the host that answers client for vip, or "" if none may.
func (v *View) Owner(vip, client netip.Addr) string {
	return Owner(v.Eligible(vip), vip, client)
}

// Owns reports whether this host answers client for vip.
func (v *View) Owns(vip, client netip.Addr) bool {
	return v != nil && v.Owner(vip, client) == v.Self
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
