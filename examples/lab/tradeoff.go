package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/arpshare/arpshare/internal/config"
	"github.com/arpshare/arpshare/internal/lab"
)

// defaultSweep is what the tradeoff mode compares unless -sweep says
// otherwise: the defaults, and settings on either side of them.
var defaultSweep = fmt.Sprintf("200ms/100ms/3,%s/%s/%d,50ms/25ms/3", config.DefaultProbeInterval, config.DefaultProbeTimeout, config.DefaultSuspicionMult)

// gossipSetting is one point of the sweep.
type gossipSetting struct {
	probe, timeout time.Duration
	mult           int
}

func (g gossipSetting) String() string { return fmt.Sprintf("%s/%s/%d", g.probe, g.timeout, g.mult) }

// config is the setting as lines of the [gossip] table.
func (g gossipSetting) config() string {
	return fmt.Sprintf("probe_interval = %q\nprobe_timeout = %q\nsuspicion_mult = %d", g.probe, g.timeout, g.mult)
}

func (g gossipSetting) isDefault() bool {
	return g.probe == config.DefaultProbeInterval && g.timeout == config.DefaultProbeTimeout && g.mult == config.DefaultSuspicionMult
}

func parseSweep(s string) ([]gossipSetting, error) {
	var out []gossipSetting
	seen := map[gossipSetting]bool{}
	for _, f := range strings.Split(s, ",") {
		parts := strings.Split(strings.TrimSpace(f), "/")
		if len(parts) != 3 {
			return nil, fmt.Errorf("-sweep %q: want probe_interval/probe_timeout/suspicion_mult", f)
		}
		var g gossipSetting
		var err error
		if g.probe, err = time.ParseDuration(parts[0]); err != nil {
			return nil, fmt.Errorf("-sweep %q: %w", f, err)
		}
		if g.timeout, err = time.ParseDuration(parts[1]); err != nil {
			return nil, fmt.Errorf("-sweep %q: %w", f, err)
		}
		if g.mult, err = strconv.Atoi(parts[2]); err != nil {
			return nil, fmt.Errorf("-sweep %q: %w", f, err)
		}
		if !seen[g] {
			seen[g] = true
			out = append(out, g)
		}
	}
	return out, nil
}

// falseDeaths counts what the hosts' logs say of members that never died.
type falseDeaths struct {
	suspected int // a host's probe and the indirect ones failed
	declared  int // memberlist declared one dead
	inView    int // a host's view showed one dead: a false death
	refuted   int // a member refuted a suspicion or its death
	moved     int // clients served by another host afterwards
}

func (f *falseDeaths) add(g falseDeaths) {
	f.suspected += g.suspected
	f.declared += g.declared
	f.inView += g.inView
	f.refuted += g.refuted
	f.moved += g.moved
}

func (f falseDeaths) String() string {
	return fmt.Sprintf("%d / %d / **%d** / %d / %d", f.suspected, f.declared, f.inView, f.refuted, f.moved)
}

// countFalse reads every host's log since t; every host is alive.
func countFalse(hosts []*lab.Host, since time.Time) (falseDeaths, error) {
	var f falseDeaths
	for _, h := range hosts {
		lines, err := h.LogSince(since)
		if err != nil {
			return f, err
		}
		for _, l := range lines {
			t := l.Text
			if strings.Contains(t, "Refuting a suspect message") || strings.Contains(t, "Refuting a dead message") {
				f.refuted++
			}
			for _, o := range hosts {
				switch {
				case strings.Contains(t, "Suspect "+o.Name+" has failed"):
					f.suspected++
				case strings.Contains(t, "Marking "+o.Name+" as failed"):
					f.declared++
				case strings.Contains(t, "cluster view changed") &&
					(strings.Contains(t, " "+o.Name+"=dead") || strings.Contains(t, `"`+o.Name+"=dead")):
					f.inView++
				}
			}
		}
	}
	return f, nil
}

// moved counts the clients served by another host than in before.
func moved(l *lab.Lab, clients []*lab.Client, before map[string]string) int {
	after := serveVIP(l, lab.VIP)
	n := 0
	for _, c := range clients {
		if after[c.Name] != before[c.Name] {
			n++
		}
	}
	return n
}

// floodRound floods the segment as TestFloodKillsNoMember does: two clients
// each send 40,000 ARP requests a second from 1,000 made-up senders for
// 60 s.
func floodRound(l *lab.Lab) (falseDeaths, error) {
	watched := l.Clients[2:]
	before := serveVIP(l, lab.VIP)
	start := time.Now()
	var g errgroup.Group
	var sent [2]int
	for i := range sent {
		g.Go(func() (err error) {
			sent[i], err = l.Clients[i].Flood(context.Background(), lab.VIP, 1000, 40000, 60*time.Second)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return falseDeaths{}, err
	}
	time.Sleep(2 * time.Second)
	f, err := countFalse(l.Hosts, start)
	f.moved = moved(l, watched, before)
	say("  flood: %d requests in %s; suspected / declared / in a view / refuted / moved: %s", sent[0]+sent[1], time.Since(start).Round(time.Second), f)
	return f, err
}

// throttleRound throttles the third daemon to 5 % of a CPU under 3,000 ARP
// requests a second for 30 s, as TestStarvedHostGrabsNothing does.
func throttleRound(l *lab.Lab) (falseDeaths, error) {
	watched := l.Clients[1:]
	before := serveVIP(l, lab.VIP)
	start := time.Now()
	undo, err := l.Hosts[2].Throttle(5)
	if err != nil {
		return falseDeaths{}, err
	}
	_, err = l.Clients[0].Flood(context.Background(), lab.VIP, 500, 3000, 30*time.Second)
	undo()
	if err != nil {
		return falseDeaths{}, err
	}
	time.Sleep(5 * time.Second)
	f, err := countFalse(l.Hosts, start)
	f.moved = moved(l, watched, before)
	say("  throttle: suspected / declared / in a view / refuted / moved: %s", f)
	return f, err
}

// tradeoffSections measures, for each setting of the sweep, failover after
// a power loss against false deaths under a flood and with a throttled
// daemon, each setting in a 3-host lab of its own.
func tradeoffSections(bin string, opts benchOptions) ([]section, error) {
	settings, err := parseSweep(opts.sweep)
	if err != nil {
		return nil, err
	}
	var rows []string
	for _, g := range settings {
		say("tradeoff: gossip %s (probe interval/timeout/suspicion multiplier)", g)
		l, err := newLab(lab.Options{Hosts: 3, Clients: 20, Binary: bin, Config: lab.HostConfig{Gossip: g.config()}})
		if err != nil {
			return nil, err
		}
		row, err := tradeoffRow(l, g, opts)
		closeLab(l)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", g, err)
		}
		rows = append(rows, row)
	}
	return []section{{"Failover against false deaths", fmt.Sprintf(`Written by `+"`go run ./examples/lab -bench -modes tradeoff -runs %d -safety %d -sweep %s`"+` on %s.
Each gossip setting (probe interval / probe timeout / suspicion multiplier;
gossip interval %s) in a 3-host lab of its own with 20 clients: %d power
losses (IPv4, as in the failover sections), then %d round(s) of each
safety test as internal/lab/safety_test.go runs it: the flood
(TestFloodKillsNoMember: two clients send 40,000 ARP requests a second
each, 60 s) and the throttled daemon (TestStarvedHostGrabsNothing: one
daemon held to 5 %% of a CPU under 3,000 requests a second, 30 s, then 5 s).
No member dies in either: each count, from every host's log over the
round, is something a live member should not see. Suspected: a host's
probe and the indirect probes failed; declared: memberlist's suspicion ran
out and it declared the member dead; **in a view**: a host's view showed the
member dead, the false death the tests fail on (a declared death is held
in doubt and checked first: see docs/design.md, Gossip); refuted: the
member refuted a suspicion or its death; moved: clients served by another
host afterwards. Idle CPU: each daemon's CPU time (user and system, from
/proc) over 10 s of a quiet cluster, as a share of one CPU, the mean of the
3. (default) marks the daemon's defaults: of these settings, the slowest
that moves a dead host's clients within the goal (median at most 0.8 s,
worst at most 1.2 s with 3 hosts). Faster settings make memberlist declare
more live members dead, each one a refutation and a settle pass over its
clients; the check every death gets before it counts (a ping and a TCP
handshake with the member's gossip port, see docs/sharing.md) keeps them
out of the views.

| setting | idle CPU per daemon | failover median / worst (clients) | flood: suspected / declared / in a view / refuted / moved | throttled: suspected / declared / in a view / refuted / moved |
|---|---|---|---|---|
%s
`, opts.runs, opts.safety, opts.sweep, today(), config.DefaultGossipInterval, opts.runs, opts.safety, strings.Join(rows, "\n"))}}, nil
}

func tradeoffRow(l *lab.Lab, g gossipSetting, opts benchOptions) (string, error) {
	if err := startAll(l.Hosts); err != nil {
		return "", err
	}
	// What the setting costs a quiet cluster: the daemons' CPU over 10 s.
	time.Sleep(2 * time.Second)
	c0, err := cpu(l)
	if err != nil {
		return "", err
	}
	const quiet = 10 * time.Second
	time.Sleep(quiet)
	c1, err := cpu(l)
	if err != nil {
		return "", err
	}
	idle := float64(cpuPerHost(c0, c1)) / float64(quiet)
	say("  idle: %.1f %% of a CPU per daemon", 100*idle)
	runs, err := failovers(l, opts.runs, lab.VIP, map[string]string{})
	if err != nil {
		return "", err
	}
	var all []time.Duration
	for _, r := range runs {
		all = append(all, r.clients...)
	}
	slices.Sort(all)
	say("  failover: %d clients, median %s, worst %s", len(all), ms(median(all)), ms(all[len(all)-1]))
	var flood, throttle falseDeaths
	for range opts.safety {
		f, err := floodRound(l)
		if err != nil {
			return "", err
		}
		flood.add(f)
		t, err := throttleRound(l)
		if err != nil {
			return "", err
		}
		throttle.add(t)
	}
	name := g.String()
	if g.isDefault() {
		name += " (default)"
	}
	return fmt.Sprintf("| %s | %.1f %% | %s / %s (%d) | %s | %s |", name, 100*idle, ms(median(all)), ms(all[len(all)-1]), len(all), flood, throttle), nil
}
