package lab

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/packet"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/internal/api"
	"github.com/arpshare/arpshare/internal/metrics"
)

// An attacker on the segment, without the gossip key, sends what a machine
// on the segment can send. Nothing it sends may move a client to another
// host, and a flood of made-up senders must not stand between a power loss
// and the real clients' failover.

// unusedIP is an address no lab machine has.
var unusedIP = netip.MustParseAddr("198.18.0.90")

// neighbourMACs returns the MAC each client's kernel holds for vip.
func neighbourMACs(t *testing.T, clients []*Client, vip netip.Addr) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, c := range clients {
		n, err := c.Neighbours()
		if err != nil {
			t.Fatal(err)
		}
		m[c.Name] = n[vip].MAC
	}
	return m
}

// nobodyMoved checks that every client still holds the MAC it held for vip
// and is still served by the host it was.
func nobodyMoved(t *testing.T, clients []*Client, vip netip.Addr, macs, base map[string]string) {
	t.Helper()
	for c, mac := range macs {
		if mac == "" {
			t.Fatalf("client %s had no neighbour entry for %s to begin with", c, vip)
		}
	}
	if diff := cmp.Diff(macs, neighbourMACs(t, clients, vip)); diff != "" {
		t.Errorf("clients' neighbour entries for %s moved (-before +after):\n%s", vip, diff)
	}
	if diff := cmp.Diff(base, assignmentTo(t, clients, vip)); diff != "" {
		t.Errorf("clients of %s changed host (-before +after):\n%s", vip, diff)
	}
}

// droppedAs checks that every host counted at least n frames that concern
// no VIP (they were dropped before the target was looked at) as outcome.
func droppedAs(t *testing.T, hosts []*Host, proto, outcome string, n float64) {
	t.Helper()
	for _, h := range hosts {
		page, err := h.Scrape()
		if err != nil {
			t.Fatal(err)
		}
		if got := metric(t, page, metrics.MetricFramesReceived, map[string]string{"protocol": proto, "vip": "", "outcome": outcome}); got < n {
			t.Errorf("%s counted %v %s frames as %s, want %v", h.Name, got, proto, outcome, n)
		}
	}
}

// clientsOf returns the clients a host's table holds (`arpshare clients`).
func clientsOf(t *testing.T, h *Host) []api.ClientStatus {
	t.Helper()
	out, err := h.Run("clients", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var cs []api.ClientStatus
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		t.Fatal(err)
	}
	return cs
}

// TestHostileBroadcastSender: three ARP requests for the VIP whose sender
// hardware address is the broadcast address, from an unused IP, move no
// client and teach no host anything. Learned, such a sender made every
// answer to it a broadcast that every client takes as "the VIP is here".
func TestHostileBroadcastSender(t *testing.T) {
	requirePrivileged(t)
	l := newLab(t, 3, 13, HostConfig{Metrics: true})
	startAll(t, l.Hosts)
	attacker, real := l.Clients[0], l.Clients[1:]
	base := assignment(t, real)
	macs := neighbourMACs(t, real, VIP)

	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	err := inNS(attacker.NS, func() error {
		conn, mac, err := arp.Listen("eth0")
		if err != nil {
			return err
		}
		defer conn.Close()
		f := arpRequest(mac, unusedIP, VIP) // Ethernet source: the attacker's own
		copy(f[22:28], bcast)
		for range 3 {
			if err := conn.WriteFrame(f, bcast); err != nil {
				return err
			}
			time.Sleep(300 * time.Millisecond)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: send: %v", attacker.Name, err)
	}
	time.Sleep(2 * time.Second) // what would follow has had time to
	nobodyMoved(t, real, VIP, macs, base)
	droppedAs(t, l.Hosts, "arp", "bad_sender_mac", 3)
	for _, h := range l.Hosts {
		if slices.ContainsFunc(clientsOf(t, h), func(c api.ClientStatus) bool { return c.IP == unusedIP }) {
			t.Errorf("%s learned %s at a broadcast MAC", h.Name, unusedIP)
		}
	}
}

// dadSolicitation builds the Ethernet frame of a duplicate address
// detection Neighbor Solicitation for target from src (MAC): IPv6 source
// ::, destination target's solicited-node group, hop limit 255.
func dadSolicitation(src net.HardwareAddr, target netip.Addr) []byte {
	t := target.As16()
	group := netip.AddrFrom16([16]byte{0xff, 0x02, 11: 1, 12: 0xff, 13: t[13], 14: t[14], 15: t[15]})
	g := group.As16()
	icmp := make([]byte, 24)
	icmp[0] = 135
	copy(icmp[8:], t[:])
	// The checksum covers a pseudo-header: source (::), destination,
	// length, next header.
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
	}
	add(g[:])
	sum += uint32(len(icmp)) + 58
	add(icmp)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(icmp[2:], ^uint16(sum))

	f := []byte{0x33, 0x33, g[12], g[13], g[14], g[15]}
	f = append(f, src...)
	f = append(f, 0x86, 0xdd)
	ip := make([]byte, 40)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(icmp)))
	ip[6], ip[7] = 58, 255
	copy(ip[24:], g[:])
	return append(append(f, ip...), icmp...)
}

// sendDAD sends three duplicate address detection solicitations for vip
// from the client, and returns the Override flag of every advertisement of
// vip it heard within a second of the last.
func sendDAD(c *Client, vip netip.Addr) ([]bool, error) {
	var overrides []bool
	err := inNS(c.NS, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		conn, err := packet.Listen(ifi, packet.Raw, 0x86dd, nil)
		if err != nil {
			return err
		}
		defer conn.Close()
		f := dadSolicitation(ifi.HardwareAddr, vip)
		for range 3 {
			if _, err := conn.WriteTo(f, &packet.Addr{HardwareAddr: net.HardwareAddr(f[:6])}); err != nil {
				return fmt.Errorf("send: %w", err)
			}
			time.Sleep(300 * time.Millisecond)
		}
		conn.SetReadDeadline(time.Now().Add(time.Second))
		b := make([]byte, 1500)
		target := vip.As16()
		for {
			n, _, err := conn.ReadFrom(b)
			if err != nil {
				return nil // the deadline
			}
			// Ethernet (14), IPv6 (40) with ICMPv6 next, then an
			// advertisement: type 136, flags at 4, target at 8.
			if n >= 14+40+24 && b[14+6] == 58 && b[54] == 136 && [16]byte(b[62:78]) == target {
				overrides = append(overrides, b[58]&0x20 != 0)
			}
		}
	})
	return overrides, err
}

// TestHostileDAD: three duplicate address detection solicitations for the
// IPv6 VIP are answered (the prober must learn the address is taken), and
// move no client: the answer goes to all nodes with Override clear.
func TestHostileDAD(t *testing.T) {
	requirePrivileged(t)
	l := newLab(t, 3, 13, HostConfig{IPv6VIP: true})
	startAll(t, l.Hosts)
	attacker, real := l.Clients[0], l.Clients[1:]
	base := assignmentTo(t, real, VIP6)
	macs := neighbourMACs(t, real, VIP6)

	overrides, err := sendDAD(attacker, VIP6)
	if err != nil {
		t.Fatalf("%s: %v", attacker.Name, err)
	}
	if len(overrides) == 0 {
		t.Error("no host answered duplicate address detection for the VIP")
	}
	for _, o := range overrides {
		if o {
			t.Error("a DAD answer to all nodes has Override set")
		}
	}
	time.Sleep(time.Second)
	nobodyMoved(t, real, VIP6, macs, base)
}

// repointingFrom returns when each host began re-pointing clients to
// itself after t, from its log.
func repointingFrom(t *testing.T, hosts []*Host, after time.Time) map[string]time.Time {
	t.Helper()
	m := map[string]time.Time{}
	for _, h := range hosts {
		lines, err := h.LogSince(after)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			if strings.Contains(l.Text, `msg="re-pointing clients to this host"`) {
				m[h.Name] = l.At
				break
			}
		}
	}
	return m
}

// TestHostileFloodTwice: a flood of made-up senders, each asking twice
// (which once protected an entry), at the highest rate the lab manages for
// up to 15 s, then a power loss of the busiest host. Every real client
// stays known everywhere, and the survivors re-point the dead host's real
// clients before the made-up ones: each is served again within 1.5 s of
// its new owner starting to re-point. (Before, the survivors sent a packet
// to each of the dead host's thirteen thousand made-up senders first, at
// 5,000 a second.) How long the survivors take to see the death and plan
// depends on the machine's load, and is logged, within 10 s.
func TestHostileFloodTwice(t *testing.T) {
	requirePrivileged(t)
	const senders = 40_000
	l := newLab(t, 3, 16, HostConfig{})
	startAll(t, l.Hosts)
	flooder, real := l.Clients[0], l.Clients[1:]
	base := assignment(t, real)

	start := time.Now()
	run, err := flooder.ARPBench(context.Background(), ARPLoad{Target: VIP, First: netip.MustParseAddr("198.18.64.0"),
		Senders: senders, Rate: 20_000, For: 15 * time.Second, Count: 2 * senders})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("flood: %d requests from %d senders in %s (%.0f a second)", run.Sent, senders, took.Round(time.Millisecond), float64(run.Sent)/took.Seconds())
	if run.Sent < senders*3/2 {
		t.Fatalf("the flood sent %d requests: most of the %d senders did not ask twice", run.Sent, senders)
	}
	time.Sleep(time.Second)
	for _, h := range l.Hosts {
		cs := clientsOf(t, h)
		for _, c := range real {
			if !slices.ContainsFunc(cs, func(s api.ClientStatus) bool { return s.IP == c.Addr }) {
				t.Errorf("%s forgot real client %s (%s) in the flood", h.Name, c.Name, c.Addr)
			}
		}
	}

	dead, served := l.Hosts[0], count(base)
	for _, h := range l.Hosts {
		if served[h.Name] > served[dead.Name] {
			dead = h
		}
	}
	probe := StartProbe(real, VIP, 100*time.Millisecond, 200*time.Millisecond)
	time.Sleep(500 * time.Millisecond)
	lost := time.Now()
	if err := dead.PowerOff(); err != nil {
		t.Fatal(err)
	}
	waitMoved(t, probe, real, base, dead.Name, lost, 10*time.Second)
	samples := probe.Stop()
	began := repointingFrom(t, l.Hosts, lost)
	for _, c := range real {
		if base[c.Name] != dead.Name {
			continue
		}
		s, _ := FirstServedAfter(samples[c.Name], lost, dead.Name)
		from, ok := began[s.Host]
		if !ok {
			t.Errorf("client %s of %s served by %s, which logged no re-pointing", c.Name, dead.Name, s.Host)
			continue
		}
		back := s.At.Sub(from).Round(time.Millisecond)
		t.Logf("client %s of %s served by %s %s after the power loss, %s after it began re-pointing (%s after the loss)",
			c.Name, dead.Name, s.Host, s.At.Sub(lost).Round(time.Millisecond), back, from.Sub(lost).Round(time.Millisecond))
		if back > 1500*time.Millisecond {
			t.Errorf("client %s of %s served by %s %s after it began re-pointing, want within 1.5 s", c.Name, dead.Name, s.Host, back)
		}
	}
}
