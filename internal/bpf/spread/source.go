package spread

import (
	"net/netip"

	"github.com/arpshare/arpshare/internal/config"
)

// MACs is where the Source looks the routers' MACs up: the client table.
type MACs interface {
	MAC(vip, ip netip.Addr) ([6]byte, bool)
}

// FromConfig is the daemon's Source: the VIPs with routers in the config
// in force (cfg returns it, new after each reload), and the MACs macs
// knows.
func FromConfig(cfg func() *config.Config, macs MACs) Source {
	return configSource{cfg, macs}
}

type configSource struct {
	cfg  func() *config.Config
	macs MACs
}

func (s configSource) Routed() []RoutedVIP {
	var out []RoutedVIP
	for _, v := range s.cfg().VIPs {
		if len(v.Routers) > 0 {
			out = append(out, RoutedVIP{VIP: v.Address, Name: v.Name, Interface: v.Interface, Routers: v.Routers})
		}
	}
	return out
}

func (s configSource) MAC(vip, ip netip.Addr) ([6]byte, bool) { return s.macs.MAC(vip, ip) }
