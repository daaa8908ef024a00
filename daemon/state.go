package daemon

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/config"
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
}

// drainedText is the drained-state file's content: a file that does not
// start with it was not written whole (a full disk, a crash on a file
// system that does not order data before the rename) or by arpshare.
const drainedText = "drained by `arpshare drain`; `arpshare resume` undoes it\n"

// newHostState starts drained if the operator left it drained. A drained
// file that is empty or holds something else is not trusted: a host that
// came up drained by accident would answer nobody until someone noticed,
// while one that serves by accident is undone by draining it again.
func newHostState(cfg *config.Config) *hostState {
	s := &hostState{cfg: cfg, healthy: map[netip.Addr]bool{}, macs: map[string]net.HardwareAddr{}}
	b, err := os.ReadFile(s.DrainedFile())
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		s.warning = fmt.Sprintf("cannot read the drained state %s: %v; starting not drained (`arpshare drain` to drain)", s.DrainedFile(), err)
	case !strings.HasPrefix(string(b), strings.TrimSpace(drainedText)):
		s.warning = fmt.Sprintf("the drained state %s is empty or corrupt (%d bytes); starting not drained (`arpshare drain` to drain)", s.DrainedFile(), len(b))
	default:
		s.drained = true
	}
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
	file := s.DrainedFile()
	if drained {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			return false, fmt.Errorf("drain: %w", err)
		}
		if err := writeFileAtomic(file, []byte(drainedText), 0o644); err != nil {
			return false, fmt.Errorf("drain: %w", err)
		}
	} else if err := removeFileSynced(file); err != nil {
		return false, fmt.Errorf("resume: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	changed = s.drained != drained
	s.drained = drained
	return changed, nil
}

// writeFileAtomic replaces file with data whole or not at all: it writes a
// temporary file in the same folder, syncs it, renames it over file and
// syncs the folder, so that neither a full disk nor a crash leaves a
// truncated file behind.
func writeFileAtomic(file string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(file)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(file)+".*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return err
	}
	return syncDir(dir)
}

// removeFileSynced removes file, if it exists, durably.
func removeFileSynced(file string) error {
	if err := os.Remove(file); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	return syncDir(filepath.Dir(file))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (s *hostState) DrainedFile() string {
	return filepath.Join(s.Config().Node.StateDir, "drained")
}

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
func (s *hostState) VIPs() []arp.VIP {
	var out []arp.VIP
	for _, v := range s.Config().VIPs {
		out = append(out, arp.VIP{Address: v.Address, Policy: v.Policy()})
	}
	return out
}

// setLinkFaults records why this host's links cannot serve some VIPs.
func (s *hostState) setLinkFaults(f map[netip.Addr]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.linkFaults = f
}

// linkFault says why this host's link cannot serve vip, as gossiped; ""
// if it can.
func (s *hostState) LinkFault(vip netip.Addr) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.linkFaults[vip]
}

// eligible is each VIP's health with the VIPs whose link cannot serve
// counted as failing: what this host gossips. s.mu is held.
func (s *hostState) eligible() map[netip.Addr]bool {
	if len(s.linkFaults) == 0 {
		return s.healthy
	}
	out := maps.Clone(s.healthy)
	for vip := range s.linkFaults {
		out[vip] = false
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
