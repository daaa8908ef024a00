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
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/arpshare/arpshare/internal/api"
	"github.com/arpshare/arpshare/internal/lab"
)

func main() {
	bench := flag.Bool("bench", false, "measure and write the results to -out")
	modes := flag.String("modes", "reply,failover,table", "what -bench measures: reply, failover (with -hosts hosts and -clients clients), table (memory and gossip with -table clients; its made-up clients stay, so it goes last), tradeoff (failover against false deaths under a flood and a throttled daemon, for each -sweep setting, in 3-host labs of its own), idle (CPU and wake-ups per daemon at rest, and of memberlist alone, for each -idle-hosts count, in labs of its own), routed (the latency spreading adds to a routed client's request, against the same request unspread, in a lab of its own)")
	tableSize := flag.Int("table", 100_000, "clients the table mode of -bench makes up")
	profiles := flag.String("profiles", "", "a directory where the table mode of -bench writes every daemon's heap profile (pprof, over the API socket) once the clients are made up and after the gossip window")
	runs := flag.Int("runs", 5, "power losses to measure with -bench")
	out := flag.String("out", "docs/benchmarks.md", "where -bench writes its results")
	hosts := flag.Int("hosts", 3, "hosts")
	clients := flag.Int("clients", 20, "clients")
	binary := flag.String("binary", "", "an arpshare binary to run instead of building ./cmd/arpshare (to compare builds)")
	sweep := flag.String("sweep", defaultSweep, "gossip settings the tradeoff mode of -bench compares: probe_interval/probe_timeout/suspicion_mult, comma-separated")
	timings := flag.String("timings", "", "gossip timings instead of the defaults, as probe_interval/probe_timeout/suspicion_mult (the failover mode says so)")
	safety := flag.Int("safety", 1, "flood and throttle rounds per setting in the tradeoff mode of -bench")
	idleHosts := flag.String("idle-hosts", "3,16", "host counts the idle mode of -bench measures, each in a lab of its own, comma-separated")
	floor := addFloorFlags()
	flag.Parse()
	if *floor.on {
		if err := memberlistFloor(*floor.name, *floor.bind, *floor.peers, *floor.key); err != nil {
			fmt.Fprintln(os.Stderr, "lab: memberlist floor:", err)
			os.Exit(1)
		}
		return
	}
	var ms []string
	for _, m := range strings.Split(*modes, ",") {
		ms = append(ms, strings.TrimSpace(m))
	}
	opts := benchOptions{modes: ms, table: *tableSize, profiles: *profiles, runs: *runs, out: *out, binary: *binary, sweep: *sweep, safety: *safety, timings: *timings}
	for _, n := range strings.Split(*idleHosts, ",") {
		h, err := strconv.Atoi(strings.TrimSpace(n))
		if err != nil || h < 1 {
			fmt.Fprintf(os.Stderr, "lab: -idle-hosts %q: want host counts, comma-separated\n", *idleHosts)
			os.Exit(2)
		}
		opts.idleHosts = append(opts.idleHosts, h)
	}
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
	// Ctrl-C still cleans up, whichever lab runs.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		closeLabs()
		os.RemoveAll(dir)
		os.Exit(130)
	}()
	if bench && slices.Contains(opts.modes, "tradeoff") {
		// Labs of its own, one per setting.
		s, err := tradeoffSections(bin, opts)
		if err := errors.Join(err, write(opts.out, s)); err != nil {
			return fmt.Errorf("tradeoff: %w", err)
		}
		opts.modes = slices.DeleteFunc(opts.modes, func(m string) bool { return m == "tradeoff" })
		if len(opts.modes) == 0 {
			return nil
		}
	}
	if bench && slices.Contains(opts.modes, "idle") {
		// Labs of its own, one per host count.
		s, err := idleSections(bin, opts)
		if err := errors.Join(err, write(opts.out, s)); err != nil {
			return fmt.Errorf("idle: %w", err)
		}
		opts.modes = slices.DeleteFunc(opts.modes, func(m string) bool { return m == "idle" })
		if len(opts.modes) == 0 {
			return nil
		}
	}
	if bench && slices.Contains(opts.modes, "routed") {
		// A lab of its own, with a router.
		s, err := routedSections(bin)
		if err := errors.Join(err, write(opts.out, s)); err != nil {
			return fmt.Errorf("routed: %w", err)
		}
		opts.modes = slices.DeleteFunc(opts.modes, func(m string) bool { return m == "routed" })
		if len(opts.modes) == 0 {
			return nil
		}
	}
	hc := lab.HostConfig{IPv6VIP: bench}
	if opts.timings != "" {
		g, err := parseSweep(opts.timings)
		if err != nil || len(g) != 1 {
			return fmt.Errorf("-timings %q: want one probe_interval/probe_timeout/suspicion_mult", opts.timings)
		}
		hc.Gossip = g[0].config()
	}
	l, err := newLab(lab.Options{Hosts: hosts, Clients: clients, Binary: bin, Dir: dir, Config: hc})
	if err != nil {
		return err
	}
	defer closeLab(l)

	say("lab %s: switch namespace with a bridge, %d hosts (198.18.0.11..), %d clients (198.18.0.101..), VIP %s", l.Suffix, hosts, clients, lab.VIP)
	if err := startAll(l.Hosts); err != nil {
		return err
	}
	if bench {
		return measure(l, opts)
	}
	return demo(l)
}

// The labs open now, for Ctrl-C.
var (
	labsMu sync.Mutex
	labs   []*lab.Lab
)

func newLab(opts lab.Options) (*lab.Lab, error) {
	l, err := lab.New(opts)
	if err != nil {
		return nil, err
	}
	labsMu.Lock()
	defer labsMu.Unlock()
	labs = append(labs, l)
	return l, nil
}

func closeLab(l *lab.Lab) {
	labsMu.Lock()
	labs = slices.DeleteFunc(labs, func(x *lab.Lab) bool { return x == l })
	labsMu.Unlock()
	l.Close()
}

func closeLabs() {
	labsMu.Lock()
	defer labsMu.Unlock()
	for _, l := range labs {
		l.Close()
	}
	labs = nil
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
	// A big lab on a small machine takes its time.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second+time.Duration(n)*time.Second)
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

	// Status recounts the clients at most once a second while the table
	// changes: wait for it to count them all, for up to 3 s.
	var s api.Status
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var err error
		if s, err = l.Hosts[0].Status(); err != nil {
			return err
		}
		if len(s.VIPs) > 0 && s.VIPs[0].Clients >= len(l.Clients) || time.Now().After(deadline) {
			break
		}
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
