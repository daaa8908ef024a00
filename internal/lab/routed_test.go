package lab

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
)

// TestRoutedSpread puts six clients behind a router and checks that their
// flows are spread over the three hosts, each serving at least a sixth of
// 180 connections; then cuts the power of the router's director and checks
// that no long-lived connection served by another host is reset, and that
// new connections are served again within the failover time.
func TestRoutedSpread(t *testing.T) {
	requirePrivileged(t)
	l := newLab(t, 3, 0, HostConfig{Routers: []netip.Addr{RouterIP}})
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
	var cands []gossip.Candidate
	for _, h := range l.Hosts {
		cands = append(cands, gossip.Candidate{Name: h.Name, Weight: 1})
	}
	director := hostNamed(l.Hosts, policy.Rendezvous(cands, VIP, RouterIP))
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
	directorLoss(t, l, r, director)
}

// directorLoss opens long-lived streams from the routed clients, cuts the
// director's power, and checks the streams on other hosts and new flows.
func directorLoss(t *testing.T, l *Lab, r *Router, director *Host) {
	t.Helper()
	var streams []*Stream
	t.Cleanup(func() {
		for _, s := range streams {
			s.Close()
		}
	})
	perHost := map[string]int{}
	for range 4 {
		for _, c := range r.Clients {
			s, err := c.OpenStream(VIP, 100*time.Millisecond, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			streams = append(streams, s)
			perHost[s.Host]++
		}
	}
	for _, h := range l.Hosts {
		if h != director && perHost[h.Name] == 0 {
			t.Fatalf("no stream on %s (streams per host: %v): nothing to check", h.Name, perHost)
		}
	}
	probe := StartProbe(r.Clients, VIP, 100*time.Millisecond, 300*time.Millisecond)
	defer probe.Stop()
	time.Sleep(500 * time.Millisecond)
	lost := time.Now()
	if err := director.PowerOff(); err != nil {
		t.Fatal(err)
	}
	back := waitRecovered(t, probe, r.Clients, director.Name, lost, 15*time.Second)
	t.Logf("director %s lost: new routed connections all served again after %s", director.Name, back.Round(time.Millisecond))
	if back > failoverWithin {
		t.Errorf("new routed connections failed for %s after the director's power loss, want at most %s", back.Round(time.Millisecond), failoverWithin)
	}
	time.Sleep(time.Second) // the streams run on through the new director
	for _, s := range streams {
		res := s.Check()
		switch {
		case s.Host == director.Name:
			continue // served by the host that died
		case res.Err != nil:
			t.Errorf("stream %s served by a live host failed: %v", s, res.Err)
		default:
			t.Logf("stream %s: %d echoes, longest stall %s", s, res.Echoes, res.MaxStall.Round(time.Millisecond))
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
