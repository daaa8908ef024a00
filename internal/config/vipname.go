package config

import (
	"fmt"
	"strings"
)

// noVIP is the error for a VIP that is not in cfg: it lists the ones that
// are, so the operator sees what to type instead.
func (cfg *Config) NoVIP(nameOrAddr string) error {
	if len(cfg.VIPs) == 0 {
		return fmt.Errorf("no VIP %q here; this host has no VIP", nameOrAddr)
	}
	var have []string
	for _, v := range cfg.VIPs {
		have = append(have, fmt.Sprintf("%s (%s)", v.Name, v.Address))
	}
	return fmt.Errorf("no VIP %q here; VIPs: %s", nameOrAddr, strings.Join(have, ", "))
}

// findVIP finds a VIP by name or address.
func (cfg *Config) FindVIP(nameOrAddr string) (VIP, bool) {
	for _, v := range cfg.VIPs {
		if v.Name == nameOrAddr || v.Address.String() == nameOrAddr {
			return v, true
		}
	}
	return VIP{}, false
}
