// Command lab shows arpshare at work on this machine, in throwaway network
// namespaces: three hosts share one VIP among twenty clients, then one host
// loses power and its clients move to the others. Run it as root:
//
//	go run ./examples/lab
//
// With -bench it measures instead, and writes docs/benchmarks.md: the reply
// path against the kernel's own ARP replies (latency, loss and CPU per frame
// at rising rates), memory and gossip with 100,000 clients, and failover
// over several power losses, with the clients set up in each of the lab's
// client profiles in turn (lab.Profiles: default Linux, clients that drop
// gratuitous ARP or unsolicited advertisements, ...). -modes picks some of them; the sections of the
// others stay as they were.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/arpshare/arpshare/internal/lab"
)

func main() {
	bench := flag.Bool("bench", false, "measure and write the results to -out")
	modes := flag.String("modes", "reply,failover,table", "what -bench measures: reply, failover, table (memory and gossip with -table clients; its made-up clients stay, so it goes last)")
	tableSize := flag.Int("table", 100_000, "clients the table mode of -bench makes up")
	runs := flag.Int("runs", 5, "power losses to measure with -bench")
	out := flag.String("out", "docs/benchmarks.md", "where -bench writes its results")
	hosts := flag.Int("hosts", 3, "hosts")
	clients := flag.Int("clients", 20, "clients")
	binary := flag.String("binary", "", "an arpshare binary to run instead of building ./cmd/arpshare (to compare builds)")
	flag.Parse()
	opts := benchOptions{modes: strings.Split(*modes, ","), table: *tableSize, runs: *runs, out: *out, binary: *binary}
	if err := run(*bench, opts, *hosts, *clients); err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

func run(bench bool, opts benchOptions, hosts, clients int) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root: it makes network namespaces")
	}
	dir, err := os.MkdirTemp("", "arpshare-lab-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "arpshare")
	if opts.binary != "" {
		bin = opts.binary
	} else {
		say("building arpshare")
		if b, err := exec.Command("go", "build", "-o", bin, "./cmd/arpshare").CombinedOutput(); err != nil {
			return fmt.Errorf("build: %v\n%s", err, b)
		}
	}
	l, err := lab.New(lab.Options{Hosts: hosts, Clients: clients, Binary: bin, Dir: dir, Config: lab.HostConfig{IPv6VIP: bench}})
	if err != nil {
		return err
	}
	defer l.Close()
	// Ctrl-C still cleans up.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		l.Close()
		os.RemoveAll(dir)
		os.Exit(130)
	}()

	say("lab %s: switch namespace with a bridge, %d hosts (198.18.0.11..), %d clients (198.18.0.101..), VIP %s", l.Suffix, hosts, clients, lab.VIP)
	if err := startAll(l.Hosts); err != nil {
		return err
	}
	if bench {
		return measure(l, opts)
	}
	return demo(l)
}

func say(format string, args ...any) {
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

func startAll(hosts []*lab.Host) error {
	for _, h := range hosts {
		if err := h.Start(); err != nil {
			return err
		}
	}
	return waitMembers(hosts, len(hosts))
}

func waitMembers(hosts []*lab.Host, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return lab.WaitMembers(ctx, hosts, n)
}

// serve dials the IPv4 VIP once from every client and returns who served it.
func serve(l *lab.Lab) map[string]string { return serveVIP(l, lab.VIP) }

func serveVIP(l *lab.Lab, vip netip.Addr) map[string]string {
	m := map[string]string{}
	for _, c := range l.Clients {
		for range 20 {
			if h, err := c.DialVIP(vip, 500*time.Millisecond); err == nil {
				m[c.Name] = h
				break
			}
		}
	}
	return m
}

func show(l *lab.Lab, assign map[string]string) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tCLIENTS\tWHO")
	for _, h := range l.Hosts {
		var who []string
		for _, c := range l.Clients {
			if assign[c.Name] == h.Name {
				who = append(who, c.Name)
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\n", h.Name, len(who), strings.Join(who, " "))
	}
	var none []string
	for _, c := range l.Clients {
		if assign[c.Name] == "" {
			none = append(none, c.Name)
		}
	}
	if len(none) > 0 {
		fmt.Fprintf(tw, "(none)\t%d\t%s\n", len(none), strings.Join(none, " "))
	}
	tw.Flush()
}

func demo(l *lab.Lab) error {
	say("every client connects to %s:80; each host's service answers with its name", lab.VIP)
	base := serve(l)
	show(l, base)

	s, err := l.Hosts[0].Status()
	if err != nil {
		return err
	}
	say("what h1's `arpshare status` says: %d known clients, per host %v", s.VIPs[0].Clients, s.VIPs[0].Owners)

	dead := l.Hosts[1]
	say("power loss on %s: its link goes down and its daemon is SIGKILLed", dead.Name)
	probe := lab.StartProbe(l.Clients, lab.VIP, 50*time.Millisecond, 100*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	lost := time.Now()
	if err := dead.PowerOff(); err != nil {
		return err
	}
	time.Sleep(4 * time.Second)
	samples := probe.Stop()
	for _, c := range l.Clients {
		if base[c.Name] != dead.Name {
			continue
		}
		if s, ok := lab.FirstServedAfter(samples[c.Name], lost, dead.Name); ok {
			say("  %s moved to %s after %s", c.Name, s.Host, s.At.Sub(lost).Round(time.Millisecond))
		} else {
			say("  %s not served again", c.Name)
		}
	}
	show(l, serve(l))

	say("power back on %s and its daemon restarted", dead.Name)
	if err := dead.PowerOn(); err != nil {
		return err
	}
	if err := dead.Start(); err != nil {
		return err
	}
	if err := waitMembers(l.Hosts, len(l.Hosts)); err != nil {
		return err
	}
	time.Sleep(time.Second)
	show(l, serve(l))
	say("done; removing the lab")
	return nil
}

// failoverSections powers off a host runs times for each address family,
// records how long each of its clients went without service, and returns
// the sections for docs/benchmarks.md.
func failoverSections(l *lab.Lab, runs int) ([]section, error) {
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
		lines, all, byProfile, err := failovers(l, runs, fam.vip, profile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", fam.name, err)
		}
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
			say("%s, clients %s: %d failovers, median %s, worst %s", fam.name, p.Name, len(ds), ms(median(ds)), ms(ds[len(ds)-1]))
		}
		title := fmt.Sprintf("Failover after a power loss (%s)", fam.name)
		sections = append(sections, section{title, fmt.Sprintf(`Written by `+"`go run ./examples/lab -bench -modes failover -runs %d`"+` on %s.
Lab: %d hosts, %d dual-stack clients, default gossip timings (probe 200ms,
timeout 100ms, suspicion x3, gossip 100ms); the clients take the lab's
client profiles in turn (%s; see docs/limitations.md). Each run cuts one
host's link and SIGKILLs its daemon; each of its clients connects to the VIP
every 10 ms (50 ms timeout), and the time is from the power loss to the
client's first connection served by a surviving host. VIP %s, re-pointed by
%s.

| run | host lost | its clients | median | worst |
|---|---|---|---|---|
%s

**All runs: %d client failovers, median %s, worst %s.**

By client profile:

| client profile | failovers | median | worst |
|---|---|---|---|
%s

Most of the time is memberlist declaring the host dead (one probe interval
to notice, the probe timeout, then suspicion_mult probe intervals of
suspicion); the re-pointing packets go out as soon as the view changes.
`, runs, today(), len(l.Hosts), len(l.Clients), strings.Join(names, ", "), fam.vip, fam.how, strings.Join(lines, "\n"), len(all), ms(median(all)), ms(all[len(all)-1]), strings.Join(perProfile, "\n"))})
	}
	return sections, nil
}

// failovers runs the power losses for one VIP; it returns a table line per
// run, every failover time, and the times by client profile.
func failovers(l *lab.Lab, runs int, vip netip.Addr, profile map[string]string) (lines []string, all []time.Duration, byProfile map[string][]time.Duration, err error) {
	byProfile = map[string][]time.Duration{}
	for r := range runs {
		base := serveVIP(l, vip)
		dead := l.Hosts[r%len(l.Hosts)]
		var theirs []*lab.Client
		for _, c := range l.Clients {
			if base[c.Name] == dead.Name {
				theirs = append(theirs, c)
			}
		}
		if len(theirs) == 0 {
			continue
		}
		probe := lab.StartProbe(theirs, vip, 10*time.Millisecond, 50*time.Millisecond)
		time.Sleep(300 * time.Millisecond)
		lost := time.Now()
		if err := dead.PowerOff(); err != nil {
			return nil, nil, nil, err
		}
		time.Sleep(5 * time.Second)
		samples := probe.Stop()
		var ds []time.Duration
		for _, c := range theirs {
			s, ok := lab.FirstServedAfter(samples[c.Name], lost, dead.Name)
			if !ok {
				return nil, nil, nil, fmt.Errorf("run %d: client %s (%s) of %s not served within 5s", r+1, c.Name, profile[c.Name], dead.Name)
			}
			ds = append(ds, s.At.Sub(lost))
			byProfile[profile[c.Name]] = append(byProfile[profile[c.Name]], s.At.Sub(lost))
		}
		slices.Sort(ds)
		all = append(all, ds...)
		lines = append(lines, fmt.Sprintf("| %d | %s | %d | %s | %s |", r+1, dead.Name, len(ds), ms(median(ds)), ms(ds[len(ds)-1])))
		say("run %d (%s): %s lost power; %d clients back after median %s, worst %s", r+1, vip, dead.Name, len(ds), ms(median(ds)), ms(ds[len(ds)-1]))

		if err := dead.PowerOn(); err != nil {
			return nil, nil, nil, err
		}
		if err := dead.Start(); err != nil {
			return nil, nil, nil, err
		}
		if err := waitMembers(l.Hosts, len(l.Hosts)); err != nil {
			return nil, nil, nil, err
		}
		time.Sleep(2 * time.Second)
	}
	if len(all) == 0 {
		return nil, nil, nil, fmt.Errorf("no run had clients to move")
	}
	slices.Sort(all)
	return lines, all, byProfile, nil
}

func median(ds []time.Duration) time.Duration { return ds[len(ds)/2] }

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func nproc() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}
