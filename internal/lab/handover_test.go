package lab

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/bpf/handover"
)

const (
	streamEvery = 100 * time.Millisecond // each stream's round trip
	maxStall    = time.Second            // the longest a stream may wait for an echo
	hold        = 2 * time.Second        // traffic through each new state before it is judged
)

// streamOwners computes which host owns each client for vip, by weight.
func streamOwners(clients []*Client, vip netip.Addr, weights map[string]int) map[string]string {
	var cs []gossip.Candidate
	for h, w := range weights {
		cs = append(cs, gossip.Candidate{Name: h, Weight: w})
	}
	want := map[string]string{}
	for _, c := range clients {
		addr := c.Addr
		if vip.Is6() {
			addr = c.Addr6
		}
		want[c.Name] = policy.Rendezvous(cs, vip, addr)
	}
	return want
}

// streamLab is a lab whose clients each hold a long-lived TCP connection to
// the IPv4 VIP and one to the IPv6 VIP.
type streamLab struct {
	*Lab
	streams []*Stream
}

func newStreamLab(t *testing.T, hosts, clients int, cfg HostConfig) *streamLab {
	t.Helper()
	cfg.IPv6VIP, cfg.Metrics = true, true
	l := &streamLab{Lab: newLab(t, hosts, clients, cfg)}
	for _, h := range l.Hosts {
		if err := h.StartEcho(); err != nil {
			t.Fatal(err)
		}
	}
	startAll(t, l.Hosts)
	t.Cleanup(func() {
		for _, s := range l.streams {
			s.Close()
		}
	})
	for _, c := range l.Clients {
		for _, vip := range []netip.Addr{VIP, VIP6} {
			l.open(t, c, vip)
		}
	}
	return l
}

// open opens a stream from c to vip, retrying while the client's first
// ARP or NDP exchange resolves.
func (l *streamLab) open(t *testing.T, c *Client, vip netip.Addr) *Stream {
	t.Helper()
	var err error
	for range 10 {
		var s *Stream
		if s, err = c.OpenStream(vip, streamEvery, time.Second); err == nil {
			l.streams = append(l.streams, s)
			return s
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal(err)
	return nil
}

// perHost counts the open streams by the host that holds them.
func (l *streamLab) perHost() map[string]int {
	n := map[string]int{}
	for _, s := range l.streams {
		n[s.Host]++
	}
	return n
}

// check fails the test for every stream that was reset, failed or stalled
// for more than maxStall so far.
func (l *streamLab) check(t *testing.T, step string) {
	t.Helper()
	for _, s := range l.streams {
		if r := s.Check(); r.Err != nil || r.MaxStall > maxStall {
			t.Errorf("%s: stream %s: %d echoes, longest stall %s, error %v", step, s, r.Echoes, r.MaxStall.Round(time.Millisecond), r.Err)
		}
	}
}

// settle waits until new connections from every client go to the owners
// weights give, on both VIPs, then lets the streams run for a while.
func (l *streamLab) settle(t *testing.T, weights map[string]int) {
	t.Helper()
	for _, vip := range []netip.Addr{VIP, VIP6} {
		waitAssignmentTo(t, l.Clients, vip, streamOwners(l.Clients, vip, weights), 10*time.Second)
	}
	time.Sleep(hold)
}

// handed sums, over hosts, the TCP segments handed to a previous owner.
func handed(t *testing.T, hosts ...*Host) uint64 {
	t.Helper()
	var n uint64
	for _, h := range hosts {
		s, err := h.Status()
		if err != nil {
			t.Fatal(err)
		}
		n += s.Handover.Packets["handed"]
	}
	return n
}

func busiest(n map[string]int) string {
	names := slices.Sorted(maps.Keys(n))
	return slices.MaxFunc(names, func(a, b string) int { return n[a] - n[b] })
}

// TestHandover: planned moves keep open connections. Twelve clients each hold
// a TCP connection to the IPv4 VIP and one to the IPv6 VIP, exchanging data
// every 100 ms, through a drain and a resume of the busiest host, a graceful
// stop, a fourth host joining and a weight changed by reload: none is reset
// or stalls for more than a second, and new connections go to the new
// owners. Without the kernel program the drain resets connections.
func TestHandover(t *testing.T) {
	requirePrivileged(t)

	t.Run("enabled", func(t *testing.T) {
		l := newStreamLab(t, 3, 12, HostConfig{Handover: `idle = "3s"`})
		h1, h2, h3 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
		all := map[string]int{"h1": 1, "h2": 1, "h3": 1}
		for _, h := range l.Hosts {
			s, err := h.Status()
			if err != nil || !s.Handover.Active {
				t.Fatalf("%s: handover not active: %+v (%v)", h.Name, s.Handover, err)
			}
		}
		l.check(t, "start")

		// Drain the busiest host: its connections stay with it.
		busy := busiest(l.perHost())
		var drained *Host
		weights := map[string]int{}
		for _, h := range l.Hosts {
			if h.Name == busy {
				drained = h
			} else {
				weights[h.Name] = 1
			}
		}
		t.Logf("streams per host: %v; draining %s", l.perHost(), busy)
		if _, err := drained.Run("drain"); err != nil {
			t.Fatal(err)
		}
		l.settle(t, weights)
		l.check(t, "drain "+busy)
		if n := handed(t, l.Hosts...); n == 0 {
			t.Errorf("after draining %s: no segment handed over", busy)
		} else {
			t.Logf("after draining %s: %d segments handed over", busy, n)
		}
		moved := 0
		for _, h := range l.Hosts {
			s, _ := h.Status()
			moved += len(s.Handover.Clients)
			page, err := h.Scrape()
			if err != nil || strings.HasPrefix(page, "An error") {
				t.Fatalf("%s: metrics: %v\n%s", h.Name, err, tail([]byte(page), 2000))
			}
			if got := metric(t, page, handover.MetricClients, nil); got != float64(len(s.Handover.Clients)) {
				t.Errorf("%s: %s = %v, status shows %d", h.Name, handover.MetricClients, got, len(s.Handover.Clients))
			}
			if got := metric(t, page, handover.MetricActive, nil); got != 1 {
				t.Errorf("%s: %s = %v, want 1", h.Name, handover.MetricActive, got)
			}
		}
		if moved == 0 {
			t.Errorf("after draining %s: no host hands a client over", busy)
		}

		if _, err := drained.Run("resume"); err != nil {
			t.Fatal(err)
		}
		l.settle(t, all)
		l.check(t, "resume "+busy)

		// Stop h3 gracefully: it drains, then waits for its connections.
		// Its clients finish theirs during the wait, and reconnect to
		// their new owners.
		stopped := make(chan error, 1)
		var stoppedAt time.Time
		go func() {
			err := h3.Stop(40 * time.Second)
			stoppedAt = time.Now()
			stopped <- err
		}()
		weights = map[string]int{"h1": 1, "h2": 1}
		l.settle(t, weights)
		l.check(t, "stopping h3")
		var finished time.Time
		var keep []*Stream
		var reopen []*Stream
		for _, s := range l.streams {
			if s.Host != "h3" {
				keep = append(keep, s)
				continue
			}
			if r := s.Close(); r.Err != nil || r.MaxStall > maxStall {
				t.Errorf("stopping h3: stream %s: %d echoes, longest stall %s, error %v", s, r.Echoes, r.MaxStall.Round(time.Millisecond), r.Err)
			}
			reopen = append(reopen, s)
		}
		finished = time.Now()
		if err := <-stopped; err != nil {
			t.Errorf("graceful stop of h3: %v", err)
		}
		if len(reopen) > 0 && stoppedAt.Before(finished) {
			t.Errorf("h3 stopped %s before its last connection ended", finished.Sub(stoppedAt))
		}
		t.Logf("h3 held %d connections; it stopped %s after the last ended", len(reopen), stoppedAt.Sub(finished).Round(time.Millisecond))
		l.streams = keep
		for _, s := range reopen {
			n := l.open(t, s.Client, s.VIP)
			if want := streamOwners([]*Client{s.Client}, s.VIP, weights)[s.Client.Name]; n.Host != want {
				t.Errorf("new connection from %s to %s went to %s, want %s", s.Client.Name, s.VIP, n.Host, want)
			}
		}

		// A fourth host joins and takes clients from h1 and h2.
		h4, err := l.AddHost()
		if err != nil {
			t.Fatal(err)
		}
		if err := h4.StartEcho(); err != nil {
			t.Fatal(err)
		}
		if err := h4.Start(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := WaitMembers(ctx, []*Host{h1, h2, h4}, 3); err != nil {
			t.Fatal(err)
		}
		weights = map[string]int{"h1": 1, "h2": 1, "h4": 1}
		l.settle(t, weights)
		l.check(t, "h4 joins")

		// h1's weight goes to 3 by reload: it takes clients from h2 and
		// h4, some of whose connections are one host further back.
		cfg := HostConfig{IPv6VIP: true, Metrics: true, Handover: `idle = "3s"`, Weight: 3}
		if err := h1.WriteConfig(cfg); err != nil {
			t.Fatal(err)
		}
		if err := h1.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		weights["h1"] = 3
		l.settle(t, weights)
		l.check(t, "h1's weight to 3")
		// Some connections are two hand-overs away: their client moved
		// h1 → h4 at the join (or h2 → h4), then on to h1 (or h2).
		prev := map[string]map[string]string{} // host → "vip client" → previous owner
		for _, h := range []*Host{h1, h2, h4} {
			st, err := h.Status()
			if err != nil {
				t.Fatal(err)
			}
			prev[h.Name] = map[string]string{}
			for _, c := range st.Handover.Clients {
				prev[h.Name][c.VIP.String()+" "+c.Client.WithZone("").String()] = c.Previous
			}
		}
		chained := 0
		for _, s := range l.streams {
			addr := s.Client.Addr
			if s.VIP.Is6() {
				addr = s.Client.Addr6
			}
			owner := streamOwners([]*Client{s.Client}, s.VIP, weights)[s.Client.Name]
			if p := prev[owner][s.VIP.String()+" "+addr.String()]; owner != s.Host && p != s.Host {
				chained++
			}
		}
		t.Logf("%d connections reached through two hand-overs", chained)
		if chained == 0 {
			t.Error("no connection two hand-overs away: the test no longer covers a client that moved twice")
		}
		t.Logf("streams per host at the end: %v; %d segments handed over in all", l.perHost(), handed(t, h1, h2, h4))

		// The clients finish; the handovers end once idle.
		for _, s := range l.streams {
			if r := s.Close(); r.Err != nil {
				t.Errorf("closing stream %s: %v", s, r.Err)
			}
		}
		l.streams = nil
		deadline := time.Now().Add(10 * time.Second)
		var idle uint64
		for _, h := range []*Host{h1, h2, h4} {
			for {
				s, err := h.Status()
				if err != nil {
					t.Fatal(err)
				}
				if len(s.Handover.Clients) == 0 {
					t.Logf("%s: handovers ended by reason %v; segments by outcome %v", h.Name, s.Handover.Ended, s.Handover.Packets)
					idle += s.Handover.Ended["idle"]
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("%s still hands over %d clients 10 s after every connection ended: %+v", h.Name, len(s.Handover.Clients), s.Handover.Clients)
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		if idle == 0 {
			t.Error("no handover ended idle after every connection ended")
		}
	})

	t.Run("disabled", func(t *testing.T) {
		l := newStreamLab(t, 3, 12, HostConfig{Handover: "enabled = false"})
		s, err := l.Hosts[0].Status()
		if err != nil || s.Handover.Active || s.Handover.Error == "" {
			t.Errorf("handover with enabled = false: %+v (%v), want inactive with a reason", s.Handover, err)
		}
		busy := busiest(l.perHost())
		weights := map[string]int{}
		var drained *Host
		for _, h := range l.Hosts {
			if h.Name == busy {
				drained = h
			} else {
				weights[h.Name] = 1
			}
		}
		if _, err := drained.Run("drain"); err != nil {
			t.Fatal(err)
		}
		l.settle(t, weights)
		resets := 0
		for _, s := range l.streams {
			r := s.Check()
			switch {
			case r.Reset() && s.Host == busy:
				resets++
			case r.Err != nil || r.MaxStall > maxStall:
				t.Errorf("stream %s, not on the drained host: error %v, stall %s", s, r.Err, r.MaxStall)
			}
		}
		t.Logf("without handover, draining %s (%d streams) reset %d of them", busy, l.perHost()[busy], resets)
		if resets != l.perHost()[busy] {
			t.Errorf("draining %s reset %d of its %d streams, want all: the test cannot tell handover from none", busy, resets, l.perHost()[busy])
		}
	})
}
