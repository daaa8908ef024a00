// Package policy decides who answers which client of a VIP: the three
// sharing modes (hash, race, single), each a Policy over the cluster's
// gossip.View. Nothing outside this package branches on the mode.
package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/arpshare/arpshare/gossip"
)

// Mode names a policy, as the config and `arpshare status` spell it.
type Mode string

// Modes.
const (
	// Hash: each client is answered by one host, by rendezvous hash.
	Hash Mode = "hash"
	// Race: every eligible host answers, after a random delay; the
	// client keeps the first answer.
	Race Mode = "race"
	// Single: one host answers every client, as a classic VIP owner.
	Single Mode = "single"
)

// Policy answers the questions the rest of arpshare asks about one VIP's
// clients. Every method is safe for concurrent use and allocates nothing
// on the answering path (Answers, Delay).
type Policy interface {
	// Mode names the policy.
	Mode() Mode
	// Answers reports whether this host (v.Self) answers client's
	// requests for vip in v.
	Answers(v *gossip.View, vip, client netip.Addr) bool
	// Delay is how long to wait before an answer.
	Delay() time.Duration
	// Exclusive reports whether each client is answered by one host
	// alone (false: every eligible host answers every client).
	Exclusive() bool
	// Owner is the host that answers client alone, or when the policy is
	// not exclusive the one that re-points it when a host is lost; ""
	// when no host may answer.
	Owner(v *gossip.View, vip, client netip.Addr) string
	// OwnerWithout is who would be client's owner in v without host.
	OwnerWithout(v *gossip.View, vip, client netip.Addr, host string) string
	// Moved reports whether this host must re-point client when the view
	// changes from old to cur: the client's answers now come from here,
	// and the client may still hold another host's MAC.
	Moved(old, cur *gossip.View, vip, client netip.Addr) bool
	// Claims reports whether this host is the one to re-point client in
	// v, should it need re-pointing.
	Claims(v *gossip.View, vip, client netip.Addr) bool
	// Holds reports whether client is this host's to re-assert in v:
	// periodically, and once the cluster settles after a change.
	Holds(v *gossip.View, vip, client netip.Addr) bool
	// Announces reports whether this host announces vip to the whole
	// segment in v (a gratuitous ARP, an unsolicited advertisement).
	Announces(v *gossip.View, vip netip.Addr) bool
}

// Parse returns the policy named s.
func Parse(s string) (Policy, error) {
	switch Mode(s) {
	case Hash:
		return hash{}, nil
	case Race:
		return race{}, nil
	case Single:
		return single{}, nil
	}
	return nil, fmt.Errorf("mode %q: want hash, race or single", s)
}

// Of returns the policy of mode m; an unknown mode is Hash, the default.
func Of(m Mode) Policy {
	p, err := Parse(string(m))
	if err != nil {
		return hash{}
	}
	return p
}

// owner is the rendezvous owner of client among vip's eligible hosts, or
// "" when none may answer from here.
func owner(v *gossip.View, vip, client netip.Addr) string {
	return Rendezvous(v.Eligible(vip), vip, client)
}

// ownerWithout is owner as if host were not there.
func ownerWithout(v *gossip.View, vip, client netip.Addr, host string) string {
	cs := slices.DeleteFunc(slices.Clone(v.Eligible(vip)), func(c gossip.Candidate) bool { return c.Name == host })
	return Rendezvous(cs, vip, client)
}

// hash gives each client to one host.
type hash struct{}

func (hash) Mode() Mode           { return Hash }
func (hash) Exclusive() bool      { return true }
func (hash) Delay() time.Duration { return 0 }

func (hash) Answers(v *gossip.View, vip, client netip.Addr) bool {
	return v.Serving() && owner(v, vip, client) == v.Self
}

func (hash) Owner(v *gossip.View, vip, client netip.Addr) string { return owner(v, vip, client) }

func (hash) OwnerWithout(v *gossip.View, vip, client netip.Addr, host string) string {
	return ownerWithout(v, vip, client, host)
}

func (p hash) Moved(old, cur *gossip.View, vip, client netip.Addr) bool {
	return p.Answers(cur, vip, client) && !p.Answers(old, vip, client)
}

func (p hash) Claims(v *gossip.View, vip, client netip.Addr) bool { return p.Answers(v, vip, client) }
func (p hash) Holds(v *gossip.View, vip, client netip.Addr) bool  { return p.Answers(v, vip, client) }
func (hash) Announces(*gossip.View, netip.Addr) bool              { return false }

// single gives every client to one host: hash with one client, the
// unspecified address.
type single struct{}

var everyone = netip.IPv6Unspecified()

func (single) Mode() Mode           { return Single }
func (single) Exclusive() bool      { return true }
func (single) Delay() time.Duration { return 0 }

func (single) Answers(v *gossip.View, vip, _ netip.Addr) bool {
	return hash{}.Answers(v, vip, everyone)
}

func (single) Owner(v *gossip.View, vip, _ netip.Addr) string { return owner(v, vip, everyone) }

func (single) OwnerWithout(v *gossip.View, vip, _ netip.Addr, host string) string {
	return ownerWithout(v, vip, everyone, host)
}

// Moved: the broadcast reaches every machine but not those that drop
// gratuitous ARP, so each known client gets a request as well.
func (p single) Moved(old, cur *gossip.View, vip, client netip.Addr) bool {
	return p.Answers(cur, vip, client) && !p.Answers(old, vip, client)
}

func (p single) Claims(v *gossip.View, vip, client netip.Addr) bool { return p.Answers(v, vip, client) }
func (p single) Holds(v *gossip.View, vip, client netip.Addr) bool  { return p.Answers(v, vip, client) }
func (p single) Announces(v *gossip.View, vip netip.Addr) bool {
	return p.Answers(v, vip, everyone)
}

// race lets every eligible host answer; the client keeps the first answer.
type race struct{}

// raceJitter bounds the random delay of a race-mode answer.
const raceJitter = 20 * time.Millisecond

func (race) Mode() Mode           { return Race }
func (race) Exclusive() bool      { return false }
func (race) Delay() time.Duration { return rand.N(raceJitter) }

func (race) Answers(v *gossip.View, vip, _ netip.Addr) bool {
	return v.Serving() && slices.ContainsFunc(v.Eligible(vip), func(c gossip.Candidate) bool { return c.Name == v.Self })
}

// Owner: every eligible host answers; the rendezvous owner among them
// re-points the client when a host is lost.
func (race) Owner(v *gossip.View, vip, client netip.Addr) string { return owner(v, vip, client) }

func (race) OwnerWithout(v *gossip.View, vip, client netip.Addr, host string) string {
	return ownerWithout(v, vip, client, host)
}

// Moved: nobody knows which answer a client kept. When a VIP loses an
// eligible host, its clients (and, as a harmless side effect, some others)
// are re-pointed by their rendezvous owner among the rest.
func (p race) Moved(old, cur *gossip.View, vip, client netip.Addr) bool {
	if !p.Claims(cur, vip, client) {
		return false
	}
	now := cur.Eligible(vip)
	return slices.ContainsFunc(old.Eligible(vip), func(c gossip.Candidate) bool { return !slices.Contains(now, c) })
}

// Claims: the client's rendezvous owner among the eligible hosts
// re-points it.
func (race) Claims(v *gossip.View, vip, client netip.Addr) bool {
	return v.Serving() && owner(v, vip, client) == v.Self
}

// Holds: no client is any one host's, so none is re-asserted.
func (race) Holds(*gossip.View, netip.Addr, netip.Addr) bool { return false }
func (race) Announces(*gossip.View, netip.Addr) bool         { return false }
