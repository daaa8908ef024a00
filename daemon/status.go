package daemon

import (
	"fmt"
	"strings"

	"github.com/arpshare/arpshare/gossip"
)

// statusLine is systemd's STATUS.
func (d *Daemon) statusLine() string {
	v := d.cluster.View()
	live := 0
	for _, m := range v.Members {
		if m.State == gossip.StateAlive {
			live++
		}
	}
	line := fmt.Sprintf("%d VIPs, %d live hosts, %d known clients", len(d.config().VIPs), live, d.table.Len())
	if w := d.waitingFor(); len(w) > 0 {
		line += "; waiting for interface " + strings.Join(w, ", ")
	}
	return line
}

// waitingFor lists the serving interfaces never opened yet, as "eth0 (vip
// web)".
func (d *Daemon) waitingFor() []string {
	cfg := d.config()
	var out []string
	for _, iface := range cfg.Interfaces() {
		if _, ok := d.state.mac(iface); ok {
			continue
		}
		var names []string
		for _, v := range cfg.VIPs {
			if v.Interface == iface {
				names = append(names, v.Name)
			}
		}
		out = append(out, fmt.Sprintf("%s (vip %s)", iface, strings.Join(names, ", ")))
	}
	return out
}
