package main

import (
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/arpshare/arpshare/internal/config"
	"github.com/arpshare/arpshare/internal/lab"
)

// retired are the titles of sections that no mode writes any more: write
// drops them.
var retired = []string{"Failover after a power loss (IPv4)", "Failover after a power loss (IPv6)"}

// failoverWindow is how long a run waits for the lost host's clients to be
// served again.
const failoverWindow = 5 * time.Second

// timeline is where the time of one failover went, from the power loss,
// as the survivors' logs tell it; -1: not seen in the window.
type timeline struct {
	probeFailed   time.Duration   // a survivor's probe of the lost host timed out
	suspected     time.Duration   // a survivor suspected it (its probe and the indirect ones failed)
	declared      time.Duration   // memberlist on a survivor declared it dead
	confirmations int             // the peer confirmations that survivor had
	viewFirst     time.Duration   // the first survivor's view showed it dead
	viewLast      time.Duration   // the last survivor's did
	viewSeen      int             // survivors whose view showed it dead
	held          int             // survivors that held the death in doubt and pinged it
	repointed     time.Duration   // the first survivor started re-pointing
	clients       []time.Duration // the lost host's clients served again, sorted
}

var confirmed = regexp.MustCompile(`\((\d+) peer confirmations\)`)

// timelineOf reads the survivors' logs for the failover of dead at lost.
func timelineOf(survivors []*lab.Host, dead string, lost time.Time) (timeline, error) {
	tl := timeline{probeFailed: -1, suspected: -1, declared: -1, viewFirst: -1, viewLast: -1, repointed: -1}
	first := func(d *time.Duration, at time.Duration) {
		if *d < 0 || at < *d {
			*d = at
		}
	}
	isDead := func(line string) bool {
		return strings.Contains(line, " "+dead+"=dead") || strings.Contains(line, `"`+dead+"=dead")
	}
	isMember := func(line string) bool {
		return strings.HasSuffix(line, " member="+dead) || strings.Contains(line, " member="+dead+" ")
	}
	for _, h := range survivors {
		lines, err := h.LogSince(lost)
		if err != nil {
			return tl, err
		}
		view := time.Duration(-1)
		for _, l := range lines {
			at := l.At.Sub(lost)
			if at > failoverWindow {
				break
			}
			switch t := l.Text; {
			case strings.Contains(t, "Failed UDP ping: "+dead+" ("):
				first(&tl.probeFailed, at)
			case strings.Contains(t, "Suspect "+dead+" has failed"):
				first(&tl.suspected, at)
			case strings.Contains(t, "Marking "+dead+" as failed"):
				if tl.declared < 0 || at < tl.declared {
					tl.declared = at
					if m := confirmed.FindStringSubmatch(t); m != nil {
						tl.confirmations, _ = strconv.Atoi(m[1])
					}
				}
			case strings.Contains(t, "cluster view changed") && isDead(t):
				first(&view, at)
			case strings.Contains(t, "checking it") && isMember(t):
				tl.held++
			case strings.Contains(t, "re-pointing clients to this host"):
				first(&tl.repointed, at)
			}
		}
		if view >= 0 {
			tl.viewSeen++
			first(&tl.viewFirst, view)
			tl.viewLast = max(tl.viewLast, view)
		}
	}
	return tl, nil
}

// failoverSections powers off a host runs times for each address family,
// records how long each of its clients went without service and where the
// time went, and returns the sections for docs/benchmarks.md.
func failoverSections(l *lab.Lab, opts benchOptions) ([]section, error) {
	runs := opts.runs
	probe, timeout, mult := config.DefaultProbeInterval, config.DefaultProbeTimeout, config.DefaultSuspicionMult
	which, flag := "default", ""
	if opts.timings != "" {
		g, err := parseSweep(opts.timings)
		if err != nil {
			return nil, err
		}
		probe, timeout, mult = g[0].probe, g[0].timeout, g[0].mult
		which, flag = "NOT the default", " -timings "+opts.timings
	}
	profile := map[string]string{}
	var names []string
	for _, p := range lab.Profiles {
		names = append(names, p.Name)
	}
	for i, c := range l.Clients {
		p := lab.Profiles[i%len(lab.Profiles)]
		if err := c.Apply(p); err != nil {
			return nil, err
		}
		profile[c.Name] = p.Name
	}
	var sections []section
	for _, fam := range []struct {
		name string
		vip  netip.Addr
		how  string
	}{
		{"IPv4", lab.VIP, "an ARP request addressed to the client from the VIP"},
		{"IPv6", lab.VIP6, "a Neighbor Solicitation addressed to the client from the VIP"},
	} {
		tls, err := failovers(l, runs, fam.vip, profile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", fam.name, err)
		}
		var all []time.Duration
		byProfile := map[string][]time.Duration{}
		var lines []string
		for i, tl := range tls {
			all = append(all, tl.clients...)
			lines = append(lines, tl.row(i+1))
		}
		for _, tl := range tls {
			for c, d := range tl.took {
				byProfile[profile[c]] = append(byProfile[profile[c]], d)
			}
		}
		slices.Sort(all)
		say("%s, all runs: %d failovers, median %s, worst %s", fam.name, len(all), ms(median(all)), ms(all[len(all)-1]))
		var perProfile []string
		for _, p := range lab.Profiles {
			ds := byProfile[p.Name]
			if len(ds) == 0 {
				perProfile = append(perProfile, fmt.Sprintf("| %s | 0 | - | - |", p.Name))
				continue
			}
			slices.Sort(ds)
			perProfile = append(perProfile, fmt.Sprintf("| %s | %d | %s | %s |", p.Name, len(ds), ms(median(ds)), ms(ds[len(ds)-1])))
		}
		title := fmt.Sprintf("Failover after a power loss: %d hosts (%s)", len(l.Hosts), fam.name)
		if opts.timings != "" {
			title = fmt.Sprintf("Failover after a power loss: %d hosts, gossip %s (%s)", len(l.Hosts), opts.timings, fam.name)
		}
		sections = append(sections, section{title, fmt.Sprintf(`Written by `+"`go run ./examples/lab -bench -modes failover -hosts %d -clients %d -runs %d%s`"+` on %s.
Lab: %d hosts, %d dual-stack clients, %s gossip timings (%s); the
clients take the lab's client profiles in turn (%s; see
docs/limitations.md). Each run cuts the link of a host that serves clients
and SIGKILLs its daemon; each of its clients connects to the VIP every
10 ms (50 ms timeout), and the time is from the power loss to the client's
first connection served by a surviving host. VIP %s, re-pointed by %s.
The other columns come from the survivors' logs (millisecond stamps), all
from the power loss: the first probe of the lost host that timed out, the
first survivor to suspect it (its probe and the indirect ones failed), the
first to declare it dead (memberlist's suspicion timeout, with the peer
confirmations it had), and the first and last survivor whose view showed
it dead (held: survivors that held the death in doubt and pinged it
first).

| run | host lost | its clients | probe failed | suspected | dead (confirmations) | first view | last view (of) | held | median | worst |
|---|---|---|---|---|---|---|---|---|---|---|
%s

**All runs: %d client failovers, median %s, worst %s.** Medians over
the runs: %s.

By client profile:

| client profile | failovers | median | worst |
|---|---|---|---|
%s
`, len(l.Hosts), len(l.Clients), runs, flag, today(), len(l.Hosts), len(l.Clients), which, timings(len(l.Hosts), probe, timeout, mult), strings.Join(names, ", "),
			fam.vip, fam.how, strings.Join(lines, "\n"), len(all), ms(median(all)), ms(all[len(all)-1]), phases(tls), strings.Join(perProfile, "\n"))})
	}
	return sections, nil
}

// powerLoss is one run: a host lost power.
type powerLoss struct {
	timeline
	dead string
	took map[string]time.Duration // by client
}

func (r powerLoss) row(n int) string {
	return fmt.Sprintf("| %d | %s | %d | %s | %s | %s (%d) | %s | %s (%d) | %d | %s | %s |", n, r.dead, len(r.clients),
		msOr(r.probeFailed), msOr(r.suspected), msOr(r.declared), r.confirmations, msOr(r.viewFirst), msOr(r.viewLast), r.viewSeen,
		r.held, ms(median(r.clients)), ms(r.clients[len(r.clients)-1]))
}

// phases sums up where the time went over the runs.
func phases(rs []powerLoss) string {
	med := func(f func(powerLoss) time.Duration) string {
		var ds []time.Duration
		for _, r := range rs {
			if d := f(r); d >= 0 {
				ds = append(ds, d)
			}
		}
		if len(ds) == 0 {
			return "-"
		}
		slices.Sort(ds)
		return ms(median(ds))
	}
	return fmt.Sprintf("probe failed %s, suspected %s, declared dead %s, first view %s, last view %s, client served %s",
		med(func(r powerLoss) time.Duration { return r.probeFailed }), med(func(r powerLoss) time.Duration { return r.suspected }),
		med(func(r powerLoss) time.Duration { return r.declared }), med(func(r powerLoss) time.Duration { return r.viewFirst }),
		med(func(r powerLoss) time.Duration { return r.viewLast }), med(func(r powerLoss) time.Duration { return median(r.clients) }))
}

// timings describes the default gossip timings and what memberlist makes of
// them in a cluster of n hosts: a suspect is declared dead after
// suspicion_mult x max(1, log10 n) probe intervals once k = suspicion_mult-2
// other members confirmed it (none expected below k+2 hosts), and after 6
// times that without.
func timings(n int, probe, timeout time.Duration, mult int) string {
	scale := max(1, math.Log10(float64(n)))
	least := time.Duration(float64(mult) * scale * float64(probe)).Round(time.Millisecond)
	k := mult - 2
	if n-2 < k {
		k = 0
	}
	return fmt.Sprintf("probe %s, timeout %s, suspicion x%d, gossip %s; with %d hosts memberlist keeps a\nsuspect %s once %d other member(s) confirmed it, up to %s without",
		probe, timeout, mult, config.DefaultGossipInterval, n, least, k, 6*least)
}

func msOr(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return ms(d)
}

// failovers runs the power losses for one VIP, each time on the next host
// that serves clients of it.
func failovers(l *lab.Lab, runs int, vip netip.Addr, profile map[string]string) ([]powerLoss, error) {
	var out []powerLoss
	for r := range runs {
		base := serveVIP(l, vip)
		var serving []*lab.Host
		for _, h := range l.Hosts {
			for _, c := range l.Clients {
				if base[c.Name] == h.Name {
					serving = append(serving, h)
					break
				}
			}
		}
		if len(serving) == 0 {
			return nil, fmt.Errorf("run %d: no host serves a client", r+1)
		}
		dead := serving[r%len(serving)]
		var theirs []*lab.Client
		for _, c := range l.Clients {
			if base[c.Name] == dead.Name {
				theirs = append(theirs, c)
			}
		}
		var survivors []*lab.Host
		for _, h := range l.Hosts {
			if h != dead {
				survivors = append(survivors, h)
			}
		}
		probe := lab.StartProbe(theirs, vip, 10*time.Millisecond, 50*time.Millisecond)
		time.Sleep(300 * time.Millisecond)
		lost := time.Now()
		if err := dead.PowerOff(); err != nil {
			return nil, err
		}
		time.Sleep(failoverWindow)
		samples := probe.Stop()
		tl, err := timelineOf(survivors, dead.Name, lost)
		if err != nil {
			return nil, err
		}
		took := map[string]time.Duration{}
		for _, c := range theirs {
			s, ok := lab.FirstServedAfter(samples[c.Name], lost, dead.Name)
			if !ok {
				return nil, fmt.Errorf("run %d: client %s (%s) of %s not served within %s", r+1, c.Name, profile[c.Name], dead.Name, failoverWindow)
			}
			tl.clients = append(tl.clients, s.At.Sub(lost))
			took[c.Name] = s.At.Sub(lost)
		}
		slices.Sort(tl.clients)
		rn := powerLoss{tl, dead.Name, took}
		out = append(out, rn)
		say("run %d (%s): %s lost power; %d clients back after median %s, worst %s; %s", r+1, vip, dead.Name, len(tl.clients),
			ms(median(tl.clients)), ms(tl.clients[len(tl.clients)-1]), phases([]powerLoss{rn}))

		if err := dead.PowerOn(); err != nil {
			return nil, err
		}
		if err := dead.Start(); err != nil {
			return nil, err
		}
		if err := waitMembers(l.Hosts, len(l.Hosts)); err != nil {
			return nil, err
		}
		time.Sleep(2 * time.Second)
	}
	return out, nil
}

func median(ds []time.Duration) time.Duration { return ds[len(ds)/2] }

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }
