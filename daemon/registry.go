package daemon

import (
	"fmt"
	"net/netip"
	"reflect"
	"sync"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/config"
	"github.com/arpshare/arpshare/internal/health"
	"github.com/arpshare/arpshare/internal/linkwatch"
	"github.com/arpshare/arpshare/internal/task"
)

// responders are the running responders, one per interface and address
// family that serves at least one VIP. They send what the repointer asks
// for on the interface of the VIP.
type responders struct {
	mu     sync.Mutex
	byLink map[linkwatch.Key]*task.Running[*arp.Responder]
	link   map[netip.Addr]linkwatch.Key // of each VIP served
}

func newResponders() *responders {
	return &responders{byLink: map[linkwatch.Key]*task.Running[*arp.Responder]{}, link: map[netip.Addr]linkwatch.Key{}}
}

// set makes the responders serve vips: a responder whose interface still
// serves VIPs keeps running with the new ones, the others stop, and
// newResponder makes the missing ones, which start runs.
func (rs *responders) set(vips []config.VIP, newResponder func(linkwatch.Key, []arp.SharedVIP) *arp.Responder, start func(*arp.Responder) *task.Running[*arp.Responder]) {
	byLink := map[linkwatch.Key][]arp.SharedVIP{}
	link := map[netip.Addr]linkwatch.Key{}
	for _, v := range vips {
		byLink[linkwatch.KeyOf(v)] = append(byLink[linkwatch.KeyOf(v)], arp.SharedVIP{Address: v.Address, Policy: v.Policy()})
		link[v.Address] = linkwatch.KeyOf(v)
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.link = link
	for k, r := range rs.byLink {
		if vips, ok := byLink[k]; ok {
			r.Task().SetVIPs(vips)
			continue
		}
		r.Stop()
		delete(rs.byLink, k)
	}
	for k, vips := range byLink {
		if _, ok := rs.byLink[k]; !ok {
			rs.byLink[k] = start(newResponder(k, vips))
		}
	}
}

// current says whether r is the running responder of k (not one a reload
// stopped).
func (rs *responders) current(k linkwatch.Key, r *arp.Responder) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	run, ok := rs.byLink[k]
	return ok && run.Task() == r
}

// forVIP returns the responder serving vip.
func (rs *responders) forVIP(vip netip.Addr) (*arp.Responder, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if k, ok := rs.link[vip]; ok {
		if r, ok := rs.byLink[k]; ok {
			return r.Task(), nil
		}
	}
	return nil, fmt.Errorf("VIP %s is no longer served", vip)
}

// Repoint tells one client of vip that vip is at this host.
func (rs *responders) Repoint(vip netip.Addr, c arp.Client) error {
	r, err := rs.forVIP(vip)
	if err != nil {
		return err
	}
	return r.Repoint(vip, c)
}

// Announce tells the whole segment that vip is at this host.
func (rs *responders) Announce(vip netip.Addr) error {
	r, err := rs.forVIP(vip)
	if err != nil {
		return err
	}
	return r.Announce(vip)
}

// Snapshot returns the responders by link.
func (rs *responders) Snapshot() map[linkwatch.Key]*arp.Responder {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	m := map[linkwatch.Key]*arp.Responder{}
	for k, r := range rs.byLink {
		m[k] = r.Task()
	}
	return m
}

// setView gives every responder the new view.
func (rs *responders) setView(v *gossip.View) {
	for _, r := range rs.Snapshot() {
		r.SetView(v)
	}
}

// checks are the running health checks, one per VIP that has a check.
type checks struct {
	mu     sync.Mutex
	byAddr map[netip.Addr]*task.Running[*health.Check]
}

func newChecks() *checks { return &checks{byAddr: map[netip.Addr]*task.Running[*health.Check]{}} }

// set makes the checks those of vips. Unchanged checks keep running, with
// their state. It reports each VIP's health as it starts: true without a
// check, false for a check that starts.
func (cs *checks) set(vips []config.VIP, state *hostState, start func(config.VIP) *task.Running[*health.Check]) {
	want := map[netip.Addr]config.VIP{}
	for _, v := range vips {
		want[v.Address] = v
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for addr, c := range cs.byAddr {
		if v, ok := want[addr]; !ok || !reflect.DeepEqual(v.Check, c.Task().VIP().Check) {
			c.Stop()
			delete(cs.byAddr, addr)
		}
	}
	for addr, v := range want {
		if _, ok := cs.byAddr[addr]; ok {
			continue
		}
		state.setHealth(addr, v.Check == nil)
		if v.Check != nil {
			cs.byAddr[addr] = start(v)
		}
	}
}

// report records the health h found, unless a reload replaced h, and says
// whether it did.
func (cs *checks) report(h *health.Check, healthy bool, state *hostState) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if c, ok := cs.byAddr[h.VIP().Address]; !ok || c.Task() != h {
		return false
	}
	state.setHealth(h.VIP().Address, healthy)
	return true
}
