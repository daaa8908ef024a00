package lab

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/packet"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"golang.org/x/net/icmp"

	"github.com/arpshare/arpshare/internal/metrics"
)

// sendGarbage sends, from the client, an ARP frame too short to parse and
// an ICMPv6 neighbor solicitation with the wrong hop limit: both reach
// every host and concern no VIP.
func sendGarbage(t *testing.T, c *Client) {
	t.Helper()
	err := inNS(c.NS, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		pc, err := packet.Listen(ifi, packet.Raw, 0x0806, nil)
		if err != nil {
			return err
		}
		defer pc.Close()
		bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		// Hardware type 1 and protocol IPv4, then address lengths of 0.
		frame := append(append(append([]byte{}, bcast...), ifi.HardwareAddr...), 0x08, 0x06, 0, 1, 8, 0)
		frame = append(frame, make([]byte, 60-len(frame))...)
		if _, err := pc.WriteTo(frame, &packet.Addr{HardwareAddr: bcast}); err != nil {
			return err
		}
		ic, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
		if err != nil {
			return err
		}
		defer ic.Close()
		// Type 135 (neighbor solicitation) for some address; multicast
		// goes out with hop limit 1, which NDP must refuse.
		ns := append([]byte{135, 0, 0, 0, 0, 0, 0, 0}, netip.MustParseAddr("fd00::1:2").AsSlice()...)
		_, err = ic.WriteTo(ns, &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: "eth0"})
		return err
	})
	if err != nil {
		t.Fatalf("%s: send garbage: %v", c.Name, err)
	}
}

// TestDualStackScrape scrapes a host that serves an IPv4 and an IPv6 VIP on
// one interface, after neighbour traffic of every kind in both families:
// the ARP and NDP responders both count frames that concern no VIP, and
// the page must still be served (two identical series would make it a 500)
// and pass the linter `promtool check metrics` runs.
func TestDualStackScrape(t *testing.T) {
	requirePrivileged(t)
	l := newLab(t, 2, 4, HostConfig{IPv6VIP: true, Metrics: true})
	startAll(t, l.Hosts)
	h1, h2 := l.Hosts[0], l.Hosts[1]

	// answered and not_owner, in both families.
	assignment(t, l.Clients)
	assignmentTo(t, l.Clients, VIP6)
	// reply: h1 resolves a client (the client's ARP reply and neighbor
	// advertisement come back); foreign_target: a client resolves h2.
	for _, c := range l.Clients[:2] {
		for _, a := range []netip.Addr{c.Addr, c.Addr6} {
			inNS(h1.NS, func() error {
				if conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(a, 9).String(), 300*time.Millisecond); err == nil {
					conn.Close()
				}
				return nil
			})
		}
		for _, a := range []netip.Addr{h2.Addr, h2.Addr6} {
			inNS(c.NS, func() error {
				if conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(a, 9).String(), 300*time.Millisecond); err == nil {
					conn.Close()
				}
				return nil
			})
		}
	}
	// malformed, in both families; peer_announce comes from h2 restarting.
	sendGarbage(t, l.Clients[0])
	if err := h2.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := h2.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := WaitMembers(ctx, l.Hosts, 2); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)

	page, err := h1.Scrape()
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	problems, err := promlint.New(strings.NewReader(page)).Lint()
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	// The handler serves what it can when a collector fails; it must not
	// have had to.
	if got := metric(t, page, "promhttp_metric_handler_errors_total", map[string]string{"cause": "gathering"}); got != 0 {
		t.Errorf("promhttp_metric_handler_errors_total{cause=gathering} = %v, want 0", got)
	}
	for _, proto := range []string{"arp", "ndp"} {
		vip := map[string]string{"arp": "web", "ndp": "web6"}[proto]
		for _, want := range []map[string]string{
			{"protocol": proto, "vip": "", "outcome": "malformed"},
			{"protocol": proto, "vip": "", "outcome": "reply"},
			{"protocol": proto, "vip": vip, "outcome": "answered"},
			{"protocol": proto, "vip": vip, "outcome": "not_owner"},
		} {
			want["interface"] = "eth0"
			if got := metric(t, page, metrics.MetricFramesReceived, want); got < 1 {
				t.Errorf("%s%v = %v, want at least 1", metrics.MetricFramesReceived, want, got)
			}
		}
	}
	if got := metric(t, page, metrics.MetricFramesReceived, map[string]string{"protocol": "arp", "vip": "", "outcome": "foreign_target"}); got < 1 {
		t.Errorf("ARP requests for h2 not counted as foreign_target: %v", got)
	}
	for _, want := range []map[string]string{
		{"vip": "web", "address": VIP.String(), "interface": "eth0", "mode": "hash"},
		{"vip": "web6", "address": VIP6.String(), "interface": "eth0", "mode": "hash"},
	} {
		if got := metric(t, page, metrics.MetricVIPInfo, want); got != 1 {
			t.Errorf("%s%v = %v, want 1", metrics.MetricVIPInfo, want, got)
		}
	}
	if got := metric(t, page, metrics.MetricClientsKnown, map[string]string{"vip": "web6"}); got != float64(len(l.Clients)) {
		t.Errorf("%s{vip=web6} = %v, want %d", metrics.MetricClientsKnown, got, len(l.Clients))
	}
}
