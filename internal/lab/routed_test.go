package lab

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/api"
	"github.com/arpshare/arpshare/internal/bpf/spread"
)

// TestRoutedSpread puts six clients behind a router, and three on the
// segment, and checks that the routed flows are spread over the three
// hosts, each serving its share of 180 connections within multinomial
// noise and at least a sixth, while the on-segment clients keep their
// owners by ARP. Then long-lived streams from the routed clients go
// through the power loss of a host that is not the router's director
// (only its streams break; the others do not stall) and then of the
// director (no stream of the surviving host is reset); new connections,
// routed and on the segment, are served again within the failover time
// after each.
func TestRoutedSpread(t *testing.T) {
	requirePrivileged(t)
	weights := map[string]int{"h1": 1, "h2": 1, "h3": 1}
	l, r := newRoutedLab(t, HostConfig{}, 3, weights)

	served := spreadShares(t, r, VIP, 180, weights)
	for _, h := range l.Hosts {
		if served[h.Name] < 180/6 {
			t.Errorf("%s served %d of 180 routed connections, want at least 30", h.Name, served[h.Name])
		}
	}
	segmentOwners(t, l.Clients, VIP, weights)
	director, _ := routedBusiest(l, nil)
	for _, h := range l.Hosts {
		s, err := h.Status()
		if err != nil {
			t.Fatal(err)
		}
		// Only the router's director spreads: the router sends it all.
		if n := s.Spread.Packets["spread"]; (h == director) != (n > 0) {
			t.Errorf("%s spread %d packets; the router's director is %s", h.Name, n, director.Name)
		}
	}
	if t.Failed() {
		return
	}
	streams := openRouted(t, r, 4)
	perHost := map[string]int{}
	for _, s := range streams {
		perHost[s.Host]++
	}
	for _, h := range l.Hosts {
		if perHost[h.Name] == 0 {
			t.Fatalf("no stream on %s (streams per host: %v): nothing to check", h.Name, perHost)
		}
	}
	var other *Host
	for _, h := range l.Hosts {
		if h != director {
			other = h
			break
		}
	}
	gone := map[string]bool{}
	hostLoss(t, l, r, streams, other, gone)
	for _, s := range streams {
		if res := s.Check(); !gone[s.Host] && res.MaxStall > maxStall {
			t.Errorf("%s lost: stream %s on a live host stalled for %s", other.Name, s, res.MaxStall.Round(time.Millisecond))
		}
	}
	if t.Failed() {
		return
	}
	hostLoss(t, l, r, streams, director, gone)
}

// hostLoss cuts dead's power while the routed and on-segment clients
// connect over and over, checks that new connections are all served again
// within the failover time, that no stream served by a live host failed,
// and that dead's did (only its flows break).
func hostLoss(t *testing.T, l *Lab, r *Router, streams []*Stream, dead *Host, gone map[string]bool) {
	t.Helper()
	clients := append(slices.Clone(r.Clients), l.Clients...)
	probe := StartProbe(clients, VIP, 100*time.Millisecond, 300*time.Millisecond)
	defer probe.Stop()
	time.Sleep(500 * time.Millisecond)
	lost := time.Now()
	if err := dead.PowerOff(); err != nil {
		t.Fatal(err)
	}
	gone[dead.Name] = true
	back := waitRecovered(t, probe, clients, dead.Name, lost, 15*time.Second)
	t.Logf("%s lost: new connections all served again after %s", dead.Name, back.Round(time.Millisecond))
	if back > failoverWithin {
		t.Errorf("new connections failed for %s after the power loss of %s, want at most %s", back.Round(time.Millisecond), dead.Name, failoverWithin)
	}
	time.Sleep(time.Second) // the streams run on
	broke := 0
	for _, s := range streams {
		res := s.Check()
		switch {
		case s.Host == dead.Name:
			if res.Err != nil || res.MaxStall > maxStall {
				broke++
			}
		case gone[s.Host]:
			continue // served by a host that died before
		case res.Err != nil:
			t.Errorf("%s lost: stream %s served by a live host failed: %v", dead.Name, s, res.Err)
		default:
			t.Logf("%s lost: stream %s: %d echoes, longest stall %s", dead.Name, s, res.Echoes, res.MaxStall.Round(time.Millisecond))
		}
	}
	// Its own streams break: else the loss was not one.
	if broke == 0 {
		t.Errorf("%s lost: none of its streams broke or stalled: the test cannot tell", dead.Name)
	}
}

// failoverWithin bounds how long new routed flows may fail after the
// director's power loss: the cluster declares it dead in about a second,
// then its successor re-points the router.
const failoverWithin = 5 * time.Second

// waitRecovered waits until every client's last five connections after the
// loss were served by live hosts, and returns when the last failure (or
// connection to the dead host) happened, counted from the loss.
func waitRecovered(t *testing.T, probe *Probe, clients []*Client, dead string, lost time.Time, within time.Duration) time.Duration {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		time.Sleep(100 * time.Millisecond)
		probe.mu.Lock()
		ok, last := true, time.Duration(0)
		for _, c := range clients {
			var after []Sample
			for _, s := range probe.samples[c.Name] {
				if s.At.After(lost) {
					after = append(after, s)
				}
				if s.At.After(lost) && (s.Err != nil || s.Host == dead) {
					last = max(last, s.At.Sub(lost))
				}
			}
			if len(after) < 5 {
				ok = false
				continue
			}
			for _, s := range after[len(after)-5:] {
				if s.Err != nil || s.Host == dead {
					ok = false
				}
			}
		}
		probe.mu.Unlock()
		if ok {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("clients not served again within %s of the power loss of %s", within, dead)
		}
	}
}

// waitSpreading has a routed client connect to every VIP of vips until
// every host has learnt the router's MAC for each (from its ARP request or
// Neighbor Solicitation for the VIP) and has want hosts in each table.
func waitSpreading(t *testing.T, hosts []*Host, r *Router, vips []netip.Addr, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, vip := range vips {
			r.Clients[0].DialVIP(vip, 500*time.Millisecond)
		}
		err := Spreading(hosts, len(vips), want)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not spreading within %s: %v", within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func hostNamed(hosts []*Host, name string) *Host {
	for _, h := range hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// newRoutedLab is three hosts serving the VIP, with weights (a host not
// named: 1) and echo services, six clients behind a router listed in
// vip.routers (and by its link-local address in the IPv6 VIP's, with
// cfg.IPv6VIP), spreading, and segmentClients clients on the segment.
func newRoutedLab(t *testing.T, cfg HostConfig, segmentClients int, weights map[string]int) (*Lab, *Router) {
	t.Helper()
	cfg.Routers = []netip.Addr{RouterIP}
	l := newLab(t, 3, segmentClients, cfg)
	r, err := l.AddRouter(6)
	if err != nil {
		t.Fatal(err)
	}
	vips := []netip.Addr{VIP}
	if cfg.IPv6VIP {
		cfg.Routers6 = []netip.Addr{r.LinkLocal}
		vips = append(vips, VIP6)
	}
	for _, h := range l.Hosts {
		hc := cfg
		hc.Weight = weights[h.Name]
		if err := h.WriteConfig(hc); err != nil {
			t.Fatal(err)
		}
		if err := h.StartEcho(); err != nil {
			t.Fatal(err)
		}
	}
	startAll(t, l.Hosts)
	waitSpreading(t, l.Hosts, r, vips, len(l.Hosts), 15*time.Second)
	return l, r
}

// spreadShares connects n times to vip from the routed clients in turn
// and checks that each host served its weight's share of the flows, within
// shareTolerance. It returns the flows each host served.
func spreadShares(t *testing.T, r *Router, vip netip.Addr, n int, weights map[string]int) map[string]int {
	t.Helper()
	served := map[string]int{}
	for i := range n {
		c := r.Clients[i%len(r.Clients)]
		host, err := c.DialVIP(vip, 2*time.Second)
		if err != nil {
			t.Fatalf("%s to %s: %v", c.Name, vip, err)
		}
		served[host]++
	}
	total := 0
	for _, w := range weights {
		total += w
	}
	t.Logf("%s: %d routed connections served: %v (weights %v)", vip, n, served, weights)
	for name, w := range weights {
		p := float64(w) / float64(total)
		want, tol := p*float64(n), shareTolerance(n, p)
		if math.Abs(float64(served[name])-want) > tol {
			t.Errorf("%s: %s served %d of %d routed connections, want %.0f ± %.0f (weight %d of %d)", vip, name, served[name], n, want, tol, w, total)
		}
	}
	return served
}

// shareTolerance is how far a host's count of n spread flows may stray
// from n·p, its share p of the weights: four standard deviations. Each
// flow lands on a host by its hash, a draw with the host's share of the
// table's slots (a binomial count: variance n·p(1-p)); that share is itself
// drawn slot by slot by the weights (variance p(1-p)/Slots, n² times that
// in the count). A correct spread strays further about once in 15,000
// checks.
func shareTolerance(n int, p float64) float64 {
	v := float64(n)*p*(1-p) + float64(n)*float64(n)*p*(1-p)/spread.Slots
	return 4 * math.Sqrt(v)
}

// segmentOwners checks that the on-segment clients keep the owners weights
// give their addresses while routed flows are spread: once they reach
// them, every connection of theirs goes there (a spread one would land on
// any host).
func segmentOwners(t *testing.T, clients []*Client, vip netip.Addr, weights map[string]int) {
	t.Helper()
	want := streamOwners(clients, vip, weights)
	waitAssignmentTo(t, clients, vip, want, 10*time.Second)
	for range 10 {
		for _, c := range clients {
			if host, err := c.DialVIP(vip, 2*time.Second); err != nil || host != want[c.Name] {
				t.Errorf("%s: on-segment client %s served by %q (%v), its owner is %s", vip, c.Name, host, err, want[c.Name])
			}
		}
	}
}

// TestRoutedWeighted spreads routed flows by weight, in IPv4 and in IPv6:
// with weights 2:1:1, h1 serves about half of each family's flows, the
// others a quarter each, and the on-segment clients of the same VIPs keep
// the owners their addresses give them. With node.propose_routers, the
// router's address is proposed for the VIP "db", which does not list it.
func TestRoutedWeighted(t *testing.T) {
	requirePrivileged(t)
	weights := map[string]int{"h1": 2, "h2": 1, "h3": 1}
	l, r := newRoutedLab(t, HostConfig{IPv6VIP: true, SecondVIP: true, ProposeRouters: true}, 3, weights)
	for _, vip := range []netip.Addr{VIP, VIP6} {
		spreadShares(t, r, vip, 360, weights)
		segmentOwners(t, l.Clients, vip, weights)
	}
	checkProposals(t, l, r, weights)
}

// checkProposals has every routed client connect to the VIP "db" twice,
// and checks that the host that owns the router for it (the router sends
// it every connection) proposes the router's address for db, and that no
// host proposes anything else: not the on-segment clients (one address
// each), not for the VIPs that list the router already, not the director
// whose frames carry spread flows.
func checkProposals(t *testing.T, l *Lab, r *Router, weights map[string]int) {
	t.Helper()
	for range 2 {
		for _, c := range r.Clients {
			if _, err := c.DialVIP(SecondVIP, 2*time.Second); err != nil {
				t.Fatalf("%s to %s: %v", c.Name, SecondVIP, err)
			}
		}
	}
	var cands []gossip.Candidate
	for name, w := range weights {
		cands = append(cands, gossip.Candidate{Name: name, Weight: w})
	}
	director := policy.Rendezvous(cands, SecondVIP, RouterIP)
	proposed := func(s api.Status) []string {
		var out []string
		for _, v := range s.VIPs {
			for _, p := range v.ProposedRouters {
				out = append(out, fmt.Sprintf("%s: %s %v", v.Name, p.MAC, p.Addresses))
			}
		}
		return out
	}
	for _, h := range l.Hosts {
		mine := h.Name == director
		s := statusWhen(t, h, func(s api.Status) bool { return mine == (len(proposed(s)) > 0) })
		got := proposed(s)
		t.Logf("%s proposes %v; segments %v", h.Name, got, s.Proposals.Segments)
		want := []string(nil)
		if mine {
			want = []string{fmt.Sprintf("db: %s [%s]", routerMAC(t, s), RouterIP)}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s proposes (-want +got):\n%s", h.Name, diff)
		}
	}
}

// routerMAC is the router's MAC as a host's status knows it.
func routerMAC(t *testing.T, s api.Status) string {
	t.Helper()
	for _, v := range s.Spread.VIPs {
		if m := v.Routers[RouterIP.String()]; m != "" {
			return m
		}
	}
	t.Fatalf("%s does not know the router's MAC", s.Node)
	return ""
}

// openRouted opens n streams from each routed client, and closes them when
// the test ends.
func openRouted(t *testing.T, r *Router, n int) []*Stream {
	t.Helper()
	var streams []*Stream
	t.Cleanup(func() {
		for _, s := range streams {
			s.Close()
		}
	})
	for range n {
		for _, c := range r.Clients {
			s, err := c.OpenStream(VIP, streamEvery, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			streams = append(streams, s)
		}
	}
	return streams
}

// spreadCount sums a spread outcome over the hosts.
func spreadCount(t *testing.T, outcome string, hosts ...*Host) uint64 {
	t.Helper()
	var n uint64
	for _, h := range hosts {
		s, err := h.Status()
		if err != nil {
			t.Fatal(err)
		}
		n += s.Spread.Packets[outcome]
	}
	return n
}

// TestRoutedDrain checks that planned moves keep routed connections: long
// streams from the clients behind the router through a drain and a resume
// of the host with most streams that is not the director, a drain and a
// resume of the director, then a fourth host's join (it takes slots from
// every host, and becomes the director). The slots that move hand their
// open connections to the host that served them; without the handover the
// drain resets them.
func TestRoutedDrain(t *testing.T) {
	requirePrivileged(t)
	t.Run("enabled", func(t *testing.T) {
		l, r := newRoutedLab(t, HostConfig{}, 0, nil)
		streams := openRouted(t, r, 4)
		director, busy := routedBusiest(l, streams)
		per := map[string]int{}
		for _, s := range streams {
			per[s.Host]++
		}
		t.Logf("streams per host: %v; director %s", per, director.Name)
		for _, step := range []struct {
			host *Host
			cmd  string
		}{{busy, "drain"}, {busy, "resume"}, {director, "drain"}, {director, "resume"}, {nil, "join"}} {
			before := spreadCount(t, "handed", l.Hosts...)
			if step.cmd == "join" {
				step.host = routedJoin(t, l, r)
			} else if _, err := step.host.Run(step.cmd); err != nil {
				t.Fatal(err)
			}
			time.Sleep(hold)
			handed := spreadCount(t, "handed", l.Hosts...) - before
			t.Logf("%s %s: %d segments handed to the host that served them; outcomes %s", step.cmd, step.host.Name, handed, spreadOutcomes(t, l.Hosts))
			// A join moves a quarter of the slots: none of 24 streams
			// among them about once in a thousand runs.
			if step.cmd != "resume" && handed == 0 {
				t.Errorf("%s %s: no segment handed over", step.cmd, step.host.Name)
			}
			for _, s := range streams {
				if res := s.Check(); res.Err != nil || res.MaxStall > maxStall {
					t.Errorf("%s %s: stream %s: %d echoes, longest stall %s, error %v", step.cmd, step.host.Name, s, res.Echoes, res.MaxStall.Round(time.Millisecond), res.Err)
				}
			}
			if t.Failed() {
				return
			}
		}
		servesNew(t, r, l.Hosts[len(l.Hosts)-1], 40)
	})
	t.Run("disabled", func(t *testing.T) {
		l, r := newRoutedLab(t, HostConfig{Handover: "enabled = false"}, 0, nil)
		streams := openRouted(t, r, 4)
		_, busy := routedBusiest(l, streams)
		if _, err := busy.Run("drain"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(hold)
		reset := 0
		for _, s := range streams {
			if s.Host == busy.Name && s.Check().Err != nil {
				reset++
			}
		}
		if reset == 0 {
			t.Errorf("without the handover, draining %s broke none of its streams: the test cannot tell", busy.Name)
		}
	})
}

// routedJoin adds a host to the routed lab, with the others' config and
// the route to the routed clients, starts it, and waits until every host
// counts it eligible and spreads over it.
func routedJoin(t *testing.T, l *Lab, r *Router) *Host {
	t.Helper()
	h, err := l.AddHost()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Route(h); err != nil {
		t.Fatal(err)
	}
	if err := h.StartEcho(); err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := WaitMembers(ctx, l.Hosts, len(l.Hosts)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		err := spreadOver(l.Hosts, h.Name)
		if err == nil {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s joined: %v", h.Name, err)
		}
	}
}

// spreadOver returns nil once every host spreads VIP with name in its
// table.
func spreadOver(hosts []*Host, name string) error {
	for _, h := range hosts {
		s, err := h.Status()
		if err != nil {
			return err
		}
		if len(s.Spread.VIPs) != 1 || !slices.Contains(s.Spread.VIPs[0].Hosts, name) {
			return fmt.Errorf("%s does not spread over %s: %+v", h.Name, name, s.Spread.VIPs)
		}
	}
	return nil
}

// servesNew has the routed clients connect at most n times, until h serves
// one: else the spread left it out.
func servesNew(t *testing.T, r *Router, h *Host, n int) {
	t.Helper()
	served := map[string]int{}
	for i := range n {
		c := r.Clients[i%len(r.Clients)]
		host, err := c.DialVIP(VIP, 2*time.Second)
		if err != nil {
			t.Fatalf("%s to %s: %v", c.Name, VIP, err)
		}
		if host == h.Name {
			return
		}
		served[host]++
	}
	t.Errorf("%s serves none of %d new routed connections: %v", h.Name, n, served)
}

// routedBusiest returns the router's director and the other host holding the
// most streams.
func routedBusiest(l *Lab, streams []*Stream) (director, busy *Host) {
	var cands []gossip.Candidate
	for _, h := range l.Hosts {
		cands = append(cands, gossip.Candidate{Name: h.Name, Weight: 1})
	}
	director = hostNamed(l.Hosts, policy.Rendezvous(cands, VIP, RouterIP))
	per := map[string]int{}
	for _, s := range streams {
		per[s.Host]++
	}
	for _, h := range l.Hosts {
		if h != director && (busy == nil || per[h.Name] > per[busy.Name]) {
			busy = h
		}
	}
	return director, busy
}

// spreadOutcomes lists every host's spread counters, for the log.
func spreadOutcomes(t *testing.T, hosts []*Host) string {
	t.Helper()
	var b strings.Builder
	for _, h := range hosts {
		s, err := h.Status()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %v; ", h.Name, s.Spread.Packets)
	}
	return b.String()
}
