package daemon

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/api"
	"github.com/arpshare/arpshare/internal/config"
	"github.com/arpshare/arpshare/internal/drain"
	"github.com/arpshare/arpshare/internal/linkwatch"
)

// statusLine is systemd's STATUS.
func statusLine(v *gossip.View, state *hostState, table *arp.ClientTable) string {
	live := 0
	for _, m := range v.Members {
		if m.State == gossip.StateAlive {
			live++
		}
	}
	line := fmt.Sprintf("%d VIPs, %d live hosts, %d known clients", len(state.Config().VIPs), live, table.Len())
	if w := state.waitingFor(); len(w) > 0 {
		line += "; waiting for interface " + strings.Join(w, ", ")
	}
	return line
}

func (d *Daemon) statusLine() string { return statusLine(d.cluster.View(), d.state, d.table) }

// Status reports this host's view.
func (d *Daemon) Status() api.Status {
	v := d.cluster.View()
	cfg, responders := d.serving.Served()
	s := api.Status{
		Node: cfg.Node.Name, Version: d.version, Draining: d.state.Draining(), Members: api.PeerStatuses(v.Members),
		Quorum: v.Quorum(), Expect: v.Expect, Join: v.JoinState(), JoinCause: v.Rejected,
		Repointing: d.repointer.Status(),
		Handover:   d.handover.Status(),
		Spread:     d.spread.Status(),
		Proposals:  d.propose.Status(),
	}
	if s.Draining {
		p := drain.ProgressIn(v, cfg.Node.Name, cfg.VIPs)
		s.Drain = &p
	}
	healthy := d.state.Health()
	counts := d.owners.Get(cfg, v, d.table)
	for _, vip := range cfg.VIPs {
		r := responders[linkwatch.KeyOf(vip)] // every VIP of a snapshot has one
		vs := api.VIPStatus{
			Name: vip.Name, Address: vip.Address, Interface: vip.Interface, Mode: vip.Mode,
			Answering: r.MAC() != nil, Healthy: healthy[vip.Address], Link: d.state.LinkFault(vip.Address), Fallback: v.Fallback(vip.Address),
			Owners: map[string]int{}, Frames: map[string]uint64{}, Eligible: []string{}, Unhealthy: []string{},
			ProposedRouters: d.propose.Proposed(vip.Address),
		}
		for _, c := range v.Eligible(vip.Address) {
			vs.Eligible = append(vs.Eligible, c.Name)
			vs.Owners[c.Name] = 0
		}
		for _, m := range v.Members {
			if m.Live() && slices.Contains(m.Meta.Unhealthy, vip.Address) {
				vs.Unhealthy = append(vs.Unhealthy, m.Name)
			}
		}
		// Race mode has no single owner: it counts none.
		vs.Clients = counts[vip.Address].Known
		for o, n := range counts[vip.Address].Owners {
			vs.Owners[o] += n
		}
		st := r.Stats()
		for k, n := range st.Frames {
			if k.VIP == vip.Address {
				vs.Frames[string(k.Outcome)] = n
			}
		}
		for k, n := range st.Kernel {
			if k.VIP == vip.Address {
				if vs.KernelFrames == nil {
					vs.KernelFrames = map[string]uint64{}
				}
				vs.KernelFrames[string(k.Outcome)] = n
			}
		}
		s.VIPs = append(s.VIPs, vs)
	}
	s.Explain()
	return s
}

// Clients lists the known clients of vip (a name or address; empty: all),
// each with the host that answers it.
func (d *Daemon) Clients(vip string) ([]api.ClientStatus, error) {
	cfg := d.config()
	var only netip.Addr
	if vip != "" {
		v, ok := cfg.FindVIP(vip)
		if !ok {
			return nil, cfg.NoVIP(vip)
		}
		only = v.Address
	}
	names := map[netip.Addr]config.VIP{}
	for _, v := range cfg.VIPs {
		names[v.Address] = v
	}
	view := d.cluster.View()
	out := make([]api.ClientStatus, 0, d.table.Len())
	for c := range d.table.All() {
		v, ok := names[c.VIP]
		if !ok || (only.IsValid() && c.VIP != only) {
			continue
		}
		cs := api.ClientStatus{VIP: v.Name, IP: c.IP, MAC: net.HardwareAddr(c.MAC[:]).String(), LastSeen: c.LastSeen}
		if p := v.Policy(); p.Exclusive() {
			cs.Owner = p.Owner(view, c.VIP, c.IP)
		}
		out = append(out, cs)
	}
	slices.SortFunc(out, func(a, b api.ClientStatus) int {
		if a.VIP != b.VIP {
			return strings.Compare(a.VIP, b.VIP)
		}
		return a.IP.Compare(b.IP)
	})
	// A walk of the table may yield a client twice (arp.ClientTable.All).
	return slices.CompactFunc(out, func(a, b api.ClientStatus) bool { return a.VIP == b.VIP && a.IP == b.IP }), nil
}

// Owner says which host answers client for vip (a name or address), from
// this host's live view: the first question when a user complains.
func (d *Daemon) Owner(vip, client string) (api.OwnerStatus, error) {
	cfg := d.config()
	v, ok := cfg.FindVIP(vip)
	if !ok {
		return api.OwnerStatus{}, cfg.NoVIP(vip)
	}
	ip, err := netip.ParseAddr(client)
	if err != nil {
		return api.OwnerStatus{}, fmt.Errorf("client %q is not an IP address", client)
	}
	view := d.cluster.View()
	o := api.OwnerStatus{VIP: v.Name, Address: v.Address, Mode: v.Mode, Client: ip,
		Owner: v.Policy().Owner(view, v.Address, ip), Eligible: []string{}, Quorum: view.Quorum()}
	for _, c := range view.Eligible(v.Address) {
		o.Eligible = append(o.Eligible, c.Name)
	}
	if c, ok := d.table.Get(v.Address, ip); ok {
		o.Known, o.MAC = true, c.MAC.String()
	}
	return o, nil
}
