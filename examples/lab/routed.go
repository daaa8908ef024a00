package main

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/arpshare/arpshare/internal/lab"
)

const (
	// routedRequests is how many requests the routed mode makes to each
	// VIP, after routedWarmup more that are not counted.
	routedRequests = 1000
	routedWarmup   = 100
)

// routedSections measures, in a lab of its own, what spreading adds to a
// routed client's request: the VIP "web" lists the router, so its flows
// are spread; the VIP "db" does not, so they all go to the router's
// director, as without spreading.
func routedSections(bin string) ([]section, error) {
	l, err := newLab(lab.Options{Hosts: 3, Binary: bin, Config: lab.HostConfig{Routers: []netip.Addr{lab.RouterIP}, SecondVIP: true}})
	if err != nil {
		return nil, err
	}
	defer closeLab(l)
	say("routed: 3 hosts, 6 clients behind a router (lab %s)", l.Suffix)
	r, err := l.AddRouter(6)
	if err != nil {
		return nil, err
	}
	if err := startAll(l.Hosts); err != nil {
		return nil, err
	}
	if err := waitSpreading(l, r); err != nil {
		return nil, err
	}
	runs, err := routedRuns(r)
	if err != nil {
		return nil, err
	}
	director, err := spreadDirector(l)
	if err != nil {
		return nil, err
	}
	return []section{{"Spreading routed flows: latency added", routedBody(runs, director)}}, nil
}

// spreadDirector is the host that spread the router's flows to web.
func spreadDirector(l *lab.Lab) (string, error) {
	for _, h := range l.Hosts {
		s, err := h.Status()
		if err != nil {
			return "", err
		}
		if s.Spread.Packets["spread"] > 0 {
			return h.Name, nil
		}
	}
	return "", fmt.Errorf("no host spread a packet")
}

// waitSpreading has a routed client connect until every host spreads the
// router's flows to web over the three hosts.
func waitSpreading(l *lab.Lab, r *lab.Router) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		r.Clients[0].DialVIP(lab.VIP, 500*time.Millisecond)
		err := lab.Spreading(l.Hosts, 1, len(l.Hosts))
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not spreading: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// routedRun is the requests to one VIP: their latencies, by the host that
// served them.
type routedRun map[string][]time.Duration

// routedRuns makes the requests, from the routed clients in turn, to db
// and web alternately, so that both see the same load on the machine.
func routedRuns(r *lab.Router) (map[netip.Addr]routedRun, error) {
	runs := map[netip.Addr]routedRun{lab.SecondVIP: {}, lab.VIP: {}}
	for i := range routedWarmup + routedRequests {
		c := r.Clients[i%len(r.Clients)]
		for _, vip := range []netip.Addr{lab.SecondVIP, lab.VIP} {
			host, took, err := c.DialTimed(vip, 2*time.Second)
			if err != nil {
				return nil, fmt.Errorf("%s to %s: %w", c.Name, vip, err)
			}
			if i >= routedWarmup {
				runs[vip][host] = append(runs[vip][host], took)
			}
		}
	}
	return runs, nil
}

// quantiles returns the count, median and 99th percentile of ds.
func quantiles(ds []time.Duration) (int, time.Duration, time.Duration) {
	s := slices.Sorted(slices.Values(ds))
	run := lab.ARPRun{Latencies: s}
	return len(s), run.Quantile(.5), run.Quantile(.99)
}

// routedBody writes the section from the runs; director spread web's
// flows.
func routedBody(runs map[netip.Addr]routedRun, director string) string {
	var unspread []time.Duration
	var unspreadOn string
	for h, ds := range runs[lab.SecondVIP] {
		unspread, unspreadOn = append(unspread, ds...), h // one host serves them all
	}
	var all, here, forwarded []time.Duration
	for h, ds := range runs[lab.VIP] {
		all = append(all, ds...)
		if h == director {
			here = append(here, ds...)
		} else {
			forwarded = append(forwarded, ds...)
		}
	}
	row := func(what string, ds []time.Duration) string {
		n, p50, p99 := quantiles(ds)
		return fmt.Sprintf("| %s | %d | %s | %s |\n", what, n, us(p50), us(p99))
	}
	_, base, _ := quantiles(unspread)
	_, fwd, _ := quantiles(forwarded)
	return fmt.Sprintf(`Written by `+"`go run ./examples/lab -bench -modes routed`"+` on %s.
A lab of its own: 3 hosts, a router namespace with 6 clients behind it. The
VIP web lists the router in vip.routers, so its routed flows are spread;
the VIP db does not, so they all go to the host that owns the router's ARP
for db (here %s), as without spreading; %s is web's director. %d requests to each VIP
(after %d not counted), alternating between the two so that both see the
same load: a request is a TCP connection from a routed client to the
hosts' service on port 80 and its one-line greeting, timed in the client's
namespace (connect and greeting: two round trips through the router). A
spread request served by another host than the director takes one more
hop each way the client sends (the director's tc program rewrites the
destination MAC and sends the frame out again); the reply goes straight
back to the router.

| requests | count | p50 | p99 |
|---|---|---|---|
%s%s%s%s
Added by spreading, at the median: %s for a request that another host
serves, against the same request unspread. The 99th percentiles move by
milliseconds from run to run with the machine's other work (the clients
are goroutines of this command, switching namespaces), more than any
difference between the rows: the median is the figure to compare.
`, today(), unspreadOn, director, routedRequests, routedWarmup,
		row("unspread (db), all on its director", unspread),
		row("spread (web), all", all),
		row("spread, served by the director", here),
		row("spread, served by another host (one hop more)", forwarded),
		signedUs(fwd-base))
}

func signedUs(d time.Duration) string {
	if d < 0 {
		return "-" + us(-d)
	}
	return us(d)
}
