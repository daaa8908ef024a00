package lab

import (
	"context"
	"encoding/json"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/arpshare/arpshare/internal/api"
)

// TestFloodKeepsRealClients fills every host's client table many times
// over with made-up senders, each asking once, as a spoofing flood would:
// the real clients, which asked again, must all still be known everywhere,
// and still be re-pointed when their host loses power: within 10 s, where a
// Linux client left to find out by itself takes 20 s or more (its entry
// stays reachable for 15-45 s, then 5 s of delay and 3 s of probes).
func TestFloodKeepsRealClients(t *testing.T) {
	requirePrivileged(t)
	const capacity, fakes = 256, 20_000
	l := newLab(t, 3, 7, HostConfig{MaxClients: capacity})
	startAll(t, l.Hosts)
	flooder, real := l.Clients[0], l.Clients[1:]
	assignment(t, real)
	// Each asks again, as a client does when its entry goes stale.
	for _, c := range real {
		if err := c.ForgetVIP(); err != nil {
			t.Fatal(err)
		}
	}
	base := assignment(t, real)

	run, err := flooder.ARPBench(context.Background(), ARPLoad{Target: VIP, First: netip.MustParseAddr("198.18.64.0"),
		Senders: fakes, Rate: 20_000, For: 10 * time.Second, Count: fakes})
	if err != nil {
		t.Fatal(err)
	}
	if run.Sent != fakes {
		t.Fatalf("sent %d made-up requests, want %d", run.Sent, fakes)
	}
	time.Sleep(time.Second)
	for _, h := range l.Hosts {
		out, err := h.Run("clients", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var cs []api.ClientStatus
		if err := json.Unmarshal([]byte(out), &cs); err != nil {
			t.Fatal(err)
		}
		if len(cs) > capacity {
			t.Errorf("%s knows %d clients, more than max_clients %d", h.Name, len(cs), capacity)
		}
		for _, c := range real {
			if !slices.ContainsFunc(cs, func(s api.ClientStatus) bool { return s.IP == c.Addr }) {
				t.Errorf("%s forgot real client %s (%s) in the flood", h.Name, c.Name, c.Addr)
			}
		}
	}

	// The host with the most real clients loses power.
	n := map[string]int{}
	for _, h := range base {
		n[h]++
	}
	dead := l.Hosts[0]
	for _, h := range l.Hosts {
		if n[h.Name] > n[dead.Name] {
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
	probe.Stop()
}
