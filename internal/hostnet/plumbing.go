package hostnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"

	"github.com/vishvananda/netlink"
)

// The kernel must accept the VIP's traffic but never answer ARP for it:
// arpshare alone decides who answers. So the VIP lives on lo, and on each
// serving interface arp_ignore=1 keeps the kernel from answering for
// addresses that are not on that interface, and arp_announce=2 keeps it from
// using the VIP as the sender of its own ARP requests (each such request
// would re-point every client that hears it to this host).

// Host is the host plumbing the daemon needs: the VIP on lo, and the ARP
// sysctls of a serving interface. Tests use a fake; kernelHost is the real
// one.
type Host interface {
	// AddVIP puts vip on lo. It is idempotent: a daemon that was killed
	// left the address, and that is fine.
	AddVIP(vip netip.Addr) error
	// RemoveVIP takes vip off lo; an address already gone is not an error.
	RemoveVIP(vip netip.Addr) error
	// QuietARP keeps the kernel from answering ARP for the VIP on iface,
	// and from using it as the sender of its own requests there.
	QuietARP(iface string) error
}

// kernelHost plumbs the running kernel, through netlink and /proc.
type Kernel struct{}

var _ Host = Kernel{}

// AddVIP puts vip on lo as a /32 (or /128).
func (Kernel) AddVIP(vip netip.Addr) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("add VIP %s to lo: %w", vip, err)
	}
	if err := netlink.AddrReplace(lo, vipAddr(vip)); err != nil {
		return fmt.Errorf("add VIP %s to lo: %w", vip, err)
	}
	return nil
}

// RemoveVIP takes vip off lo.
func (Kernel) RemoveVIP(vip netip.Addr) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("remove VIP %s from lo: %w", vip, err)
	}
	if err := netlink.AddrDel(lo, vipAddr(vip)); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("remove VIP %s from lo: %w", vip, err)
	}
	return nil
}

func vipAddr(vip netip.Addr) *netlink.Addr {
	bits := vip.BitLen()
	return &netlink.Addr{IPNet: &net.IPNet{IP: vip.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
}

// QuietARP sets arp_ignore and arp_announce on the serving interface; the
// sysctl guard keeps them so.
func (Kernel) QuietARP(iface string) error {
	for _, s := range arpSysctls {
		p := filepath.Join(ProcNetConf, iface, s.key)
		if err := os.WriteFile(p, []byte(s.value), 0o644); err != nil {
			return fmt.Errorf("interface %s: set %s=%s: %w", iface, s.key, s.value, err)
		}
	}
	return nil
}
