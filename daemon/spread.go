package daemon

import (
	"net/netip"
	"time"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/internal/bpf/handover"
	"github.com/arpshare/arpshare/internal/bpf/spread"
)

// spreadSource tells the spreader which VIPs have routers and the MACs of
// the clients this host knows (the routers among them).
type spreadSource struct {
	state *hostState
	table *arp.ClientTable
}

var _ spread.Source = spreadSource{}

func (s spreadSource) Served() []spread.Served {
	var out []spread.Served
	for _, v := range s.state.Config().VIPs {
		if len(v.Routers) > 0 {
			out = append(out, spread.Served{VIP: v.Address, Name: v.Name, Interface: v.Interface, Routers: v.Routers})
		}
	}
	return out
}

// spreadGrace is how long the flows that move to this host in a planned
// move hand their open connections to the host that served them: the
// handover's grace, or nothing without the handover.
func spreadGrace(h handover.Config) time.Duration {
	if !h.Enabled {
		return 0
	}
	return h.Grace
}

func (s spreadSource) MAC(vip, ip netip.Addr) ([6]byte, bool) { return s.table.MAC(vip, ip) }
