package daemon

import (
	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/daemon/spread"
)

// spreadSource tells the spreader which VIPs have routers and whom this host
// knows (the routers among them).
type spreadSource struct {
	state *hostState
	table *arp.ClientTable
}

var _ spread.Source = spreadSource{}

func (s spreadSource) Served() []spread.Served {
	var out []spread.Served
	for _, v := range s.state.config().VIPs {
		if len(v.Routers) > 0 {
			out = append(out, spread.Served{VIP: v.Address, Name: v.Name, Interface: v.Interface, Routers: v.Routers})
		}
	}
	return out
}

func (s spreadSource) Clients() []arp.Client { return s.table.Clients() }
