package daemon

import (
	"iter"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/internal/bpf/handover"
)

// handoverSource tells the handover what this host serves and whom it knows.
type handoverSource struct {
	state *hostState
	table *arp.ClientTable
}

var _ handover.Source = handoverSource{}

func (s handoverSource) Served() []handover.ServedVIP {
	var out []handover.ServedVIP
	for _, v := range s.state.Config().VIPs {
		mac, _ := s.state.mac(v.Interface)
		out = append(out, handover.ServedVIP{VIP: v.Address, Policy: v.Policy(), Interface: v.Interface, MAC: mac})
	}
	return out
}

func (s handoverSource) All() iter.Seq[arp.Entry] { return s.table.All() }
func (s handoverSource) Len() int                 { return s.table.Len() }
