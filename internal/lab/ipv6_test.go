package lab

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/api"
)

// assignmentTo dials vip once from every client (retrying while its first
// neighbour resolution runs) and returns which host served it.
func assignmentTo(t *testing.T, clients []*Client, vip netip.Addr) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, c := range clients {
		deadline := time.Now().Add(10 * time.Second)
		for {
			host, err := c.DialVIP(vip, time.Second)
			if err == nil {
				got[c.Name] = host
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("client %s never reached %s: %v", c.Name, vip, err)
			}
		}
	}
	return got
}

func owners6(clients []*Client, hosts ...string) map[string]string {
	var cs []gossip.Candidate
	for _, h := range hosts {
		cs = append(cs, gossip.Candidate{Name: h, Weight: 1})
	}
	want := map[string]string{}
	for _, c := range clients {
		want[c.Name] = policy.Rendezvous(cs, VIP6, c.Addr6)
	}
	return want
}

// TestIPv6 shares an IPv6 VIP over Neighbor Discovery, next to an IPv4 one
// (dual stack), and fails a host over.
func TestIPv6(t *testing.T) {
	requirePrivileged(t)
	l := newLab(t, 3, 20, HostConfig{IPv6VIP: true})
	startAll(t, l.Hosts)

	base := assignmentTo(t, l.Clients, VIP6)
	if diff := cmp.Diff(owners6(l.Clients, "h1", "h2", "h3"), base); diff != "" {
		t.Errorf("IPv6 clients not served by their owners (-want +got):\n%s", diff)
	}
	perHost := count(base)
	if len(perHost) != 3 {
		t.Errorf("IPv6 clients per host: %v, want all three hosts", perHost)
	}
	// Dual stack: the IPv4 VIP is shared too, each family by its own hash.
	v4 := assignment(t, l.Clients)
	for _, c := range l.Clients {
		if want := owner([]string{"h1", "h2", "h3"}, c); v4[c.Name] != want {
			t.Errorf("IPv4: client %s served by %s, owner is %s", c.Name, v4[c.Name], want)
		}
	}
	for _, h := range l.Hosts {
		s := statusWhen(t, h, func(s api.Status) bool {
			return slices.ContainsFunc(s.VIPs, func(v api.VIPStatus) bool { return v.Address == VIP6 && v.Clients == len(l.Clients) })
		})
		for _, v := range s.VIPs {
			if v.Address == VIP6 {
				if v.Clients != len(l.Clients) || !v.Answering {
					t.Errorf("%s status for web6: %d clients, answering %v", h.Name, v.Clients, v.Answering)
				}
				if diff := cmp.Diff(perHost, v.Owners); diff != "" {
					t.Errorf("%s status: IPv6 clients per host (-served +reported):\n%s", h.Name, diff)
				}
			}
		}
	}

	powerLoss(t, l, l.Hosts[1], VIP6, base, owners6(l.Clients, "h1", "h3"))

	// A graceful stop moves the IPv6 clients without an outage, as for IPv4.
	stopping := l.Hosts[2]
	probe := StartProbe(l.Clients, VIP6, 50*time.Millisecond, 200*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	if err := stopping.Stop(10 * time.Second); err != nil {
		t.Fatalf("%s: stop: %v", stopping.Name, err)
	}
	time.Sleep(time.Second)
	samples := probe.Stop()
	for _, c := range l.Clients {
		ss := samples[c.Name]
		if o := LongestOutage(ss); o > 500*time.Millisecond {
			t.Errorf("IPv6 client %s: outage of %s during a graceful stop", c.Name, o)
		}
		if last := ss[len(ss)-1]; last.Host != "h1" {
			t.Errorf("IPv6 client %s served by %q with only h1 left", c.Name, last.Host)
		}
	}
}
