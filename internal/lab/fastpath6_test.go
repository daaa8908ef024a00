package lab

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// countsFor is countsOf for any VIP.
func countsFor(t *testing.T, h *Host, vip netip.Addr) frameCounts {
	t.Helper()
	s, err := h.Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range s.VIPs {
		if v.Address == vip {
			return frameCounts{
				userAnswered: v.Frames["answered"] - v.KernelFrames["answered"], userNotOwner: v.Frames["not_owner"] - v.KernelFrames["not_owner"],
				kernelAnswered: v.KernelFrames["answered"], kernelNotOwner: v.KernelFrames["not_owner"],
			}
		}
	}
	t.Fatalf("%s: no VIP %s in status", h.Name, vip)
	return frameCounts{}
}

// resolveAll has every client forget the IPv6 VIP and connect to it (its
// kernel solicits the VIP's solicited-node group first), and checks that
// each reaches its owner: the advertisement that answered it, from the
// kernel or not, was one its kernel took.
func resolveAll(t *testing.T, l *Lab, owners map[string]string) {
	t.Helper()
	for _, c := range l.Clients {
		if err := c.Forget(VIP6); err != nil {
			t.Fatal(err)
		}
	}
	if got := assignmentTo(t, l.Clients, VIP6); !cmp.Equal(owners, got) {
		t.Errorf("IPv6 clients not served by their owners (-want +got):\n%s", cmp.Diff(owners, got))
	}
}

// TestFastPathNDP: with node.fast_path = "on", the Neighbor Solicitations
// of IPv6 clients the daemons know are answered (or left to the owner) in
// the kernel: the clients' own kernels take the advertisements (they reach
// their owners) while the daemons' user-space counts do not move.
func TestFastPathNDP(t *testing.T) {
	requirePrivileged(t)
	l := newLab(t, 3, 6, HostConfig{FastPath: "on", Expect: 3, IPv6VIP: true})
	startAll(t, l.Hosts)
	owners := owners6(l.Clients, "h1", "h2", "h3")
	// The first solicitations are the daemons' to decide; the second ones
	// settle the clients, whose decisions then go to the kernel.
	resolveAll(t, l, owners)
	deadline := time.Now().Add(15 * time.Second)
	for {
		before := countsFor(t, l.Hosts[0], VIP6)
		resolveAll(t, l, owners)
		after := countsFor(t, l.Hosts[0], VIP6)
		if after.userAnswered == before.userAnswered && after.userNotOwner == before.userNotOwner && after.kernelAnswered+after.kernelNotOwner > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: user space still decides on known IPv6 clients after 15 s: %+v", l.Hosts[0].Name, after)
		}
		time.Sleep(500 * time.Millisecond)
	}
	before := map[string]frameCounts{}
	for _, h := range l.Hosts {
		before[h.Name] = countsFor(t, h, VIP6)
	}
	const rounds = 3
	for range rounds {
		resolveAll(t, l, owners)
	}
	perHost := count(owners)
	for _, h := range l.Hosts {
		b, a := before[h.Name], countsFor(t, h, VIP6)
		if a.userAnswered != b.userAnswered || a.userNotOwner != b.userNotOwner {
			t.Errorf("%s: user space decided on known IPv6 clients: %+v, then %+v", h.Name, b, a)
		}
		mine := uint64(rounds * perHost[h.Name])
		theirs := uint64(rounds*len(l.Clients)) - mine
		if a.kernelAnswered-b.kernelAnswered < mine || a.kernelNotOwner-b.kernelNotOwner < theirs {
			t.Errorf("%s: the kernel answered %d and left %d to others, want at least %d and %d",
				h.Name, a.kernelAnswered-b.kernelAnswered, a.kernelNotOwner-b.kernelNotOwner, mine, theirs)
		}
	}
}
