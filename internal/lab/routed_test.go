package lab

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
)

// TestRoutedSpread puts six clients behind a router, and three on the
// segment, and checks that the routed flows are spread over the three
// hosts, each serving at least a sixth of 180 connections, while the
// on-segment clients keep their owners by ARP. Then long-lived streams
// from the routed clients go through the power loss of a host that is not
// the router's director (only its streams break; the others do not stall)
// and then of the director (no stream of the surviving host is reset); new
// connections are served again within the failover time after each.
func TestRoutedSpread(t *testing.T) {
	requirePrivileged(t)
	l, r := newRoutedLab(t, HostConfig{}, 3)

	served := map[string]int{}
	for range 30 {
		for _, c := range r.Clients {
			host, err := c.Dial(2 * time.Second)
			if err != nil {
				t.Fatalf("%s: %v", c.Name, err)
			}
			served[host]++
		}
	}
	t.Logf("180 routed connections served: %v", served)
	for _, h := range l.Hosts {
		if served[h.Name] < 180/6 {
			t.Errorf("%s served %d of 180 routed connections, want at least 30", h.Name, served[h.Name])
		}
	}
	waitAssignment(t, l.Clients, streamOwners(l.Clients, VIP, map[string]int{"h1": 1, "h2": 1, "h3": 1}), 10*time.Second)
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
	hostLoss(t, r, streams, other, gone)
	for _, s := range streams {
		if res := s.Check(); !gone[s.Host] && res.MaxStall > maxStall {
			t.Errorf("%s lost: stream %s on a live host stalled for %s", other.Name, s, res.MaxStall.Round(time.Millisecond))
		}
	}
	if t.Failed() {
		return
	}
	hostLoss(t, r, streams, director, gone)
}

// hostLoss cuts dead's power while the routed clients connect over and
// over, checks that new connections are all served again within the
// failover time, and that no stream served by a live host failed.
func hostLoss(t *testing.T, r *Router, streams []*Stream, dead *Host, gone map[string]bool) {
	t.Helper()
	probe := StartProbe(r.Clients, VIP, 100*time.Millisecond, 300*time.Millisecond)
	defer probe.Stop()
	time.Sleep(500 * time.Millisecond)
	lost := time.Now()
	if err := dead.PowerOff(); err != nil {
		t.Fatal(err)
	}
	gone[dead.Name] = true
	back := waitRecovered(t, probe, r.Clients, dead.Name, lost, 15*time.Second)
	t.Logf("%s lost: new routed connections all served again after %s", dead.Name, back.Round(time.Millisecond))
	if back > failoverWithin {
		t.Errorf("new routed connections failed for %s after the power loss of %s, want at most %s", back.Round(time.Millisecond), dead.Name, failoverWithin)
	}
	time.Sleep(time.Second) // the streams run on
	for _, s := range streams {
		res := s.Check()
		switch {
		case gone[s.Host]:
			continue // served by a host that died
		case res.Err != nil:
			t.Errorf("%s lost: stream %s served by a live host failed: %v", dead.Name, s, res.Err)
		default:
			t.Logf("%s lost: stream %s: %d echoes, longest stall %s", dead.Name, s, res.Echoes, res.MaxStall.Round(time.Millisecond))
		}
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
			t.Fatalf("routed clients not served again within %s of the director's power loss", within)
		}
	}
}

// waitSpreading has a routed client connect until every host has learnt the
// router's MAC (from its ARP request for the VIP) and has hosts hosts in
// its table.
func waitSpreading(t *testing.T, hosts []*Host, r *Router, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r.Clients[0].Dial(500 * time.Millisecond)
		err := spreading(hosts, want)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not spreading within %s: %v", within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func spreading(hosts []*Host, want int) error {
	for _, h := range hosts {
		s, err := h.Status()
		if err != nil {
			return err
		}
		sp := s.Spread
		switch {
		case !sp.Active:
			return fmt.Errorf("%s: spreading not active: %s", h.Name, sp.Error)
		case len(sp.VIPs) != 1:
			return fmt.Errorf("%s: spreading %d VIPs", h.Name, len(sp.VIPs))
		case sp.VIPs[0].Routers[RouterIP.String()] == "":
			return fmt.Errorf("%s: router %s not seen yet", h.Name, RouterIP)
		case len(sp.VIPs[0].Hosts) != want:
			return fmt.Errorf("%s: spread table has hosts %v", h.Name, sp.VIPs[0].Hosts)
		}
	}
	return nil
}

func hostNamed(hosts []*Host, name string) *Host {
	for _, h := range hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// newRoutedLab is three hosts serving the VIP, with echo services, six
// clients behind a router listed in vip.routers, spreading, and
// segmentClients clients on the segment.
func newRoutedLab(t *testing.T, cfg HostConfig, segmentClients int) (*Lab, *Router) {
	t.Helper()
	cfg.Routers = []netip.Addr{RouterIP}
	l := newLab(t, 3, segmentClients, cfg)
	r, err := l.AddRouter(6)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range l.Hosts {
		if err := h.StartEcho(); err != nil {
			t.Fatal(err)
		}
	}
	startAll(t, l.Hosts)
	waitSpreading(t, l.Hosts, r, len(l.Hosts), 15*time.Second)
	return l, r
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
// of the host with most streams that is not the director, then a drain of
// the director. The slots that move hand their open connections to the
// host that served them; without the handover the drain resets them.
func TestRoutedDrain(t *testing.T) {
	requirePrivileged(t)
	t.Run("enabled", func(t *testing.T) {
		l, r := newRoutedLab(t, HostConfig{}, 0)
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
		}{{busy, "drain"}, {busy, "resume"}, {director, "drain"}} {
			before := spreadCount(t, "handed", l.Hosts...)
			if _, err := step.host.Run(step.cmd); err != nil {
				t.Fatal(err)
			}
			time.Sleep(hold)
			handed := spreadCount(t, "handed", l.Hosts...) - before
			t.Logf("%s %s: %d segments handed to the host that served them; outcomes %s", step.cmd, step.host.Name, handed, spreadOutcomes(t, l.Hosts))
			if step.cmd == "drain" && handed == 0 {
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
	})
	t.Run("disabled", func(t *testing.T) {
		l, r := newRoutedLab(t, HostConfig{Handover: "enabled = false"}, 0)
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
