package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/arpshare/arpshare/internal/api"
)

// Profile is a set of client settings that change how its kernel updates a
// neighbour entry: the clients arpshare must re-point come configured in
// all these ways.
type Profile struct {
	Name    string
	Sysctls []string // key=value, set in the client's namespace
}

// Profiles are the client behaviours the lab covers (docs/limitations.md
// lists them with what each one does).
var Profiles = []Profile{
	{Name: "default"},
	// Ignore gratuitous ARP (sender IP = target IP) entirely: hardening
	// guides, and hosts behind Wi-Fi proxy ARP.
	{Name: "drop_gratuitous_arp", Sysctls: []string{
		"net.ipv4.conf.all.drop_gratuitous_arp=1", "net.ipv4.conf.eth0.drop_gratuitous_arp=1"}},
	// Ignore Neighbor Advertisements that were not asked for.
	{Name: "drop_unsolicited_na", Sysctls: []string{
		"net.ipv6.conf.all.drop_unsolicited_na=1", "net.ipv6.conf.eth0.drop_unsolicited_na=1"}},
	// Create entries from gratuitous ARP, not only update them.
	{Name: "arp_accept", Sysctls: []string{"net.ipv4.conf.all.arp_accept=1", "net.ipv4.conf.eth0.arp_accept=1"}},
	// Create entries from unsolicited advertisements.
	{Name: "accept_untracked_na", Sysctls: []string{
		"net.ipv6.conf.all.accept_untracked_na=1", "net.ipv6.conf.eth0.accept_untracked_na=1"}},
	// Ignore a second ARP update of an entry for 10 s, not 1 s
	// (locktime is in hundredths of a second).
	{Name: "locktime_10s", Sysctls: []string{"net.ipv4.neigh.eth0.locktime=1000"}},
	// All of the above that restrict, plus strict ARP answering and
	// reverse-path filtering.
	{Name: "hardened", Sysctls: []string{
		"net.ipv4.conf.all.drop_gratuitous_arp=1", "net.ipv4.conf.eth0.drop_gratuitous_arp=1",
		"net.ipv6.conf.all.drop_unsolicited_na=1", "net.ipv6.conf.eth0.drop_unsolicited_na=1",
		"net.ipv4.neigh.eth0.locktime=1000",
		"net.ipv4.conf.all.arp_ignore=2", "net.ipv4.conf.all.arp_filter=1",
		"net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.eth0.rp_filter=1"}},
}

// Apply sets the profile's settings in the client's namespace.
func (c *Client) Apply(p Profile) error {
	if len(p.Sysctls) == 0 {
		return nil
	}
	args := append([]string{"netns", "exec", c.NS, "sysctl", "-q", "-w"}, p.Sysctls...)
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: profile %s: %w: %s", c.Name, p.Name, err, out)
	}
	return nil
}

// Neighbour is one entry of a client's neighbour table.
type Neighbour struct {
	MAC   string // "" while it has none (FAILED, INCOMPLETE)
	State string
}

// Neighbours returns the client's neighbour table on eth0, both families, by
// address, without sending anything.
func (c *Client) Neighbours() (map[netip.Addr]Neighbour, error) {
	out, err := ipOut("-n", c.NS, "neigh", "show", "dev", "eth0")
	if err != nil {
		return nil, err
	}
	m := map[netip.Addr]Neighbour{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		a, err := netip.ParseAddr(f[0])
		if err != nil {
			continue
		}
		n := Neighbour{State: f[len(f)-1]}
		for i := range f {
			if f[i] == "lladdr" && i+1 < len(f) {
				n.MAC = f[i+1]
			}
		}
		m[a] = n
	}
	return m, nil
}

// Owner asks the host's daemon which host answers client for the VIP named
// vip (`arpshare owner`).
func (h *Host) Owner(vip string, client netip.Addr) (string, error) {
	o, err := api.GetOwner(context.Background(), h.Socket, vip, client.String())
	return o.Owner, err
}
