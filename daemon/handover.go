package daemon

import (
	"context"
	"net/netip"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/daemon/handover"
)

// handoverSource tells the handover what this host serves and whom it knows.
type handoverSource struct{ d *Daemon }

var _ handover.Source = handoverSource{}

func (s handoverSource) Served() []handover.Served {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	var out []handover.Served
	for _, v := range s.d.cfg.VIPs {
		out = append(out, handover.Served{VIP: v.Address, Policy: v.Policy(), Interface: v.Interface, MAC: s.d.macs[v.Interface]})
	}
	return out
}

func (s handoverSource) Clients() []arp.Client { return s.d.table.Clients() }
func (s handoverSource) Len() int              { return s.d.table.Len() }

// waitHandedOver is the last step of a graceful stop before leaving: the
// connections other hosts hand to this one end, up to handover.stop_wait.
func (d *Daemon) waitHandedOver(ctx context.Context) {
	var vips []netip.Addr
	cfg := d.config()
	for _, v := range cfg.VIPs {
		vips = append(vips, v.Address)
	}
	d.notify("STATUS=draining: waiting for open connections")
	d.handover.WaitConnections(ctx, vips, cfg.Handover.StopWait)
}
