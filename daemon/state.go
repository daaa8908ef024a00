package daemon

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/config"
	"github.com/arpshare/arpshare/internal/drain"
)

// hostState is what this host is and tells the cluster about itself: the
// config in force, whether it drains (by the operator, or because it
// stops), each VIP's health here, and the MACs of its serving interfaces.
// It produces the gossip metadata.
type hostState struct {
	mu       sync.Mutex
	cfg      *config.Config
	drained  bool // by the operator; survives restarts
	stopping bool
	leave    leaveState // see drain.go
	healthy  map[netip.Addr]bool
	macs     map[string]net.HardwareAddr // by interface, while open
	// warning is what the daemon should say about the state it found at
	// start ("" when nothing).
	warning string
	// linkFaults says why this host's link cannot serve a VIP (link.go).
	linkFaults map[netip.Addr]string
	// spreadHeld reports whether a VIP's routed flows are held
	// (spread.Spreader.Held); nil: none is.
	spreadHeld func(netip.Addr) bool
}

// newHostState starts drained if the operator left it drained (see
// drain.ReadFile).
func newHostState(cfg *config.Config) *hostState {
	s := &hostState{cfg: cfg, healthy: map[netip.Addr]bool{}, macs: map[string]net.HardwareAddr{}}
	s.drained, s.warning = drain.ReadFile(cfg.Node.StateDir)
	return s
}

func (s *hostState) Config() *config.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// meta is this host's gossip metadata.
func (s *hostState) meta() gossip.Meta {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.cfg.Meta(s.drained || s.stopping, s.eligible())
	m.Leaving, m.Repointed = s.leave.leaving, s.leave.repointed
	for _, mac := range s.macs {
		m.MACs = append(m.MACs, mac.String())
	}
	slices.Sort(m.MACs)
	return m
}

func (s *hostState) Draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drained || s.stopping
}

// SetDrained records the operator's choice, on disk first so that it
// survives a restart, and says whether it changed.
func (s *hostState) SetDrained(drained bool) (changed bool, err error) {
	if err := drain.WriteFile(s.Config().Node.StateDir, drained); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	changed = s.drained != drained
	s.drained = drained
	return changed, nil
}

// DrainedFile keeps the operator's drain.
func (s *hostState) DrainedFile() string { return drain.FilePath(s.Config().Node.StateDir) }

// setHealth records a VIP's health check result.
func (s *hostState) setHealth(vip netip.Addr, healthy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.healthy[vip] = healthy
}

func (s *hostState) Health() map[netip.Addr]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.healthy)
}

// setMAC records a serving interface's MAC as it opens, and says whether
// it is new.
func (s *hostState) setMAC(iface string, mac net.HardwareAddr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := s.macs[iface].String() != mac.String()
	s.macs[iface] = mac
	return changed
}

func (s *hostState) mac(iface string) (net.HardwareAddr, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mac, ok := s.macs[iface]
	return mac, ok
}

// setConfig puts cfg in force: it forgets the health of VIPs that are gone
// (health is the checks' to set, see checks.apply) and the MACs of
// interfaces no longer served.
func (s *hostState) setConfig(cfg *config.Config) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg = cfg
	vips := map[netip.Addr]bool{}
	for _, v := range cfg.VIPs {
		vips[v.Address] = true
	}
	maps.DeleteFunc(s.healthy, func(a netip.Addr, _ bool) bool { return !vips[a] })
	ifaces := cfg.Interfaces()
	maps.DeleteFunc(s.macs, func(i string, _ net.HardwareAddr) bool { return !slices.Contains(ifaces, i) })
}

// waitingFor lists the serving interfaces never opened yet, as "eth0 (vip
// web)".
func (s *hostState) waitingFor() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, iface := range s.cfg.Interfaces() {
		if _, ok := s.macs[iface]; ok {
			continue
		}
		var names []string
		for _, v := range s.cfg.VIPs {
			if v.Interface == iface {
				names = append(names, v.Name)
			}
		}
		out = append(out, fmt.Sprintf("%s (vip %s)", iface, strings.Join(names, ", ")))
	}
	return out
}

// VIPs returns the VIPs in force and their policies.
func (s *hostState) VIPs() []arp.SharedVIP {
	var out []arp.SharedVIP
	for _, v := range s.Config().VIPs {
		out = append(out, arp.SharedVIP{Address: v.Address, Policy: v.Policy()})
	}
	return out
}

// setLinkFaults records why this host's links cannot serve some VIPs.
func (s *hostState) setLinkFaults(f map[netip.Addr]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.linkFaults = f
}

// LinkFault says why this host's link cannot serve vip, as gossiped, or
// that its routed flows are held; "" if neither.
func (s *hostState) LinkFault(vip netip.Addr) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.linkFaults[vip]; f != "" || s.spreadHeld == nil || !s.spreadHeld(vip) {
		return f
	}
	return "routed flows: spread table not made with the other hosts yet"
}

// eligible is each VIP's health with the VIPs whose link cannot serve,
// and those whose routed flows are held (spread.Spreader.Held), counted as
// failing: what this host gossips. s.mu is held.
func (s *hostState) eligible() map[netip.Addr]bool {
	var out map[netip.Addr]bool
	fail := func(vip netip.Addr) {
		if out == nil {
			out = maps.Clone(s.healthy)
		}
		out[vip] = false
	}
	for vip := range s.linkFaults {
		fail(vip)
	}
	for _, v := range s.cfg.VIPs {
		if s.spreadHeld != nil && s.spreadHeld(v.Address) {
			fail(v.Address)
		}
	}
	if out == nil {
		return s.healthy
	}
	return out
}

// OperatorDrained reports whether `arpshare drain` drained this host (a
// stop drains too, but is not the operator's doing).
func (s *hostState) OperatorDrained() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drained
}
