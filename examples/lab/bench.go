package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/arpshare/arpshare/internal/bpf/fastpath"
	"github.com/arpshare/arpshare/internal/lab"
)

type benchOptions struct {
	modes []string
	table int // clients the table mode makes up
	// profiles, if set, is where the table mode writes heap profiles.
	profiles string
	runs     int // power losses per address family
	out      string
	// binary, if set, is the arpshare binary to run instead of this
	// tree's.
	binary string
	sweep  string // the tradeoff mode's settings
	safety int    // flood and throttle rounds per setting
	// timings, if set, replaces the default gossip timings
	// (probe_interval/probe_timeout/suspicion_mult).
	timings string
	// idleHosts are the host counts the idle mode measures.
	idleHosts []int
}

// section is one "## " section of docs/benchmarks.md.
type section struct{ title, body string }

func today() string {
	load, _ := os.ReadFile("/proc/loadavg")
	return time.Now().UTC().Format("2006-01-02 15:04 UTC") + " (load average " + strings.Join(strings.Fields(string(load))[:3], " ") + ")"
}

// measure runs the modes asked for and writes their sections into the
// benchmarks page, keeping the sections of the modes not run.
func measure(l *lab.Lab, opts benchOptions) error {
	var fresh []section
	for _, mode := range opts.modes {
		var (
			s   []section
			err error
		)
		switch strings.TrimSpace(mode) {
		case "reply":
			s, err = replySections(l)
		case "table":
			s, err = tableSections(l, opts)
		case "failover":
			s, err = failoverSections(l, opts)
		default:
			err = fmt.Errorf("no bench mode %q", mode)
		}
		if err != nil {
			// Keep what the modes before measured.
			return errors.Join(fmt.Errorf("%s: %w", mode, err), write(opts.out, fresh))
		}
		fresh = append(fresh, s...)
	}
	return write(opts.out, fresh)
}

// write puts fresh sections into the page at out, in place of those of the
// same title, keeping the others.
func write(out string, fresh []section) error {
	if len(fresh) == 0 {
		return nil
	}
	old, _ := os.ReadFile(out)
	sections := slices.DeleteFunc(parseSections(string(old)), func(s section) bool { return slices.Contains(retired, s.title) })
	for _, f := range fresh {
		if i := slices.IndexFunc(sections, func(s section) bool { return s.title == f.title }); i >= 0 {
			sections[i] = f
		} else {
			sections = append(sections, f)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# Benchmarks

Written by `+"`go run ./examples/lab -bench`"+` (each section says which modes
and when) in a lab of network namespaces on one machine: %s, %d CPUs shown
by nproc, shared with other work, so expect noise and repeat before trusting
a difference. Every number below comes from that command.
`, cpuModel(), nproc())
	for _, s := range sections {
		fmt.Fprintf(&b, "\n## %s\n\n%s", s.title, strings.TrimLeft(s.body, "\n"))
	}
	if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
		return err
	}
	say("written to %s", out)
	return nil
}

// parseSections splits a page into its "## " sections; what comes before
// the first is dropped (measure writes it anew).
func parseSections(doc string) []section {
	var out []section
	for _, part := range strings.Split("\n"+doc, "\n## ")[1:] {
		title, body, _ := strings.Cut(part, "\n")
		out = append(out, section{strings.TrimSpace(title), strings.TrimRight(body, "\n") + "\n"})
	}
	return out
}

// Fake senders for the reply path: few, in the lab's subnet, so that the
// kernel answers them too and its neighbour table stays small.
var (
	replySenders = netip.MustParseAddr("198.18.0.64")
	replyCount   = 36
	// Made-up clients for the table mode: up to 130,000 addresses from
	// 198.18.1.0, inside the lab's 198.18.0.0/15; more clients than that
	// are the same addresses asking for more VIPs (planTable).
	tableSenders = netip.MustParseAddr("198.18.1.0")
	maxTable     = 130_000
)

// cpu returns every host's daemon CPU time.
func cpu(l *lab.Lab) ([]time.Duration, error) {
	var out []time.Duration
	for _, h := range l.Hosts {
		t, err := h.CPUTime()
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// cpuPerHost returns the mean CPU time a daemon used between two samples.
func cpuPerHost(before, after []time.Duration) time.Duration {
	var sum time.Duration
	for i := range before {
		sum += after[i] - before[i]
	}
	return sum / time.Duration(len(before))
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

// restartWith restarts every daemon with node.fast_path set to fastPath.
func restartWith(l *lab.Lab, fastPath string) error {
	for _, h := range l.Hosts {
		if err := h.Stop(10 * time.Second); err != nil {
			return fmt.Errorf("%s: stop: %w", h.Name, err)
		}
		if err := h.WriteConfig(lab.HostConfig{IPv6VIP: true, FastPath: fastPath}); err != nil {
			return err
		}
	}
	return startAll(l.Hosts)
}

// kernelCost is what the kernel spent, beyond the daemons, during a run.
type kernelCost struct {
	bpf           time.Duration // the fast path programs' own run time, all hosts
	bpfRuns       uint64
	softirq, busy time.Duration // the whole machine's, from /proc/stat
	daemon        time.Duration // per daemon, less its idle use
	frames        int
}

func (k kernelCost) perFrame(d time.Duration) float64 {
	if k.frames == 0 {
		return 0
	}
	return float64(d) / float64(k.frames) / float64(time.Microsecond)
}

// replySections measures the reply path, with the kernel fast path off
// (every frame to the daemons) and on: latency against the kernel's own
// replies at 2,000 requests a second, then loss, latency and CPU per frame
// at rising rates, the daemons' CPU and the kernel's.
func replySections(l *lab.Lab) ([]section, error) {
	var latencyRows, rateRows, ndpLatency, ndpRates []string
	var summary []string
	idleNote := ""
	for _, fp := range []string{"off", "on"} {
		say("reply path with node.fast_path = %q: restarting the daemons", fp)
		if err := restartWith(l, fp); err != nil {
			return nil, err
		}
		lat, rates, sum, idle, err := replyPath(l, fp)
		if err != nil {
			return nil, err
		}
		lat6, rates6, err := ndpReplyPath(l, fp, idle)
		if err != nil {
			return nil, err
		}
		ndpLatency, ndpRates = append(ndpLatency, lat6...), append(ndpRates, rates6...)
		latencyRows = append(latencyRows, lat...)
		rateRows = append(rateRows, rates...)
		summary = append(summary, sum)
		idleNote += fmt.Sprintf(" %s with the fast path %s;", idle.Round(time.Millisecond), fp)
	}
	kernel := l.Hosts[0].Addr
	latency := section{"Reply path: latency against the kernel", fmt.Sprintf(`Written by `+"`go run ./examples/lab -bench -modes reply`"+` on %s. %d hosts; one
client namespace sends broadcast ARP requests at 2,000 a second from %d
made-up senders (%s on), alternately for the VIP %s (answered by arpshare
on the sender's owner) and for %s, %s's own address (answered by its
kernel), 5 s each; the time is from the send to the answer's arrival, both
in the sending process. Measured twice, the daemons restarted between:
with `+"`node.fast_path = \"off\"`"+` (every request read and answered by the
daemon) and `+"`\"on\"`"+` (requests from known clients answered in the kernel
by the tc program, docs/design.md "The kernel fast path"). Goal: arpshare's
median at most 1.5× the kernel's.

| fast path | round | arpshare p50 / p99 | lost | kernel p50 / p99 | lost | p50 ratio |
|---|---|---|---|---|---|---|
%s

%s
`, today(), len(l.Hosts), replyCount, replySenders, lab.VIP, kernel, l.Hosts[0].Name, strings.Join(latencyRows, "\n"), strings.Join(summary, "\n"))}
	rates := section{"Reply path: loss and CPU at rising rates", fmt.Sprintf(`Written by `+"`go run ./examples/lab -bench -modes reply`"+` on %s. The same
lab and senders, 4 s per rate and target, with the fast path off and on.
Every daemon receives every request (they are broadcast). *Daemon CPU* is a
daemon's CPU time (user and system, from /proc/<pid>/stat) during the
arpshare run, less its idle use (%s per 5 s), over the requests sent,
averaged over the %d daemons. The kernel's share is not free, so it is shown
too: *BPF* is the fast path program's own run time per request per host
(the kernel's BPF statistics, enabled for the run with BPF_ENABLE_STATS and
off again after; it leaves out the packet's delivery and the reply's
transmission); *softirq* and *machine* are the whole machine's softirq and
busy time (/proc/stat: every namespace, the client sending and the bridge
included, and whatever else the shared machine ran) over the requests
sent; the last column is the same softirq figure while the kernel answers
for its own address, the cost of a reply made wholly in softirq. Compare
the settings at the same rate, and with that column, rather than read the
machine-wide figures alone. With %d senders each asks again within
%d/rate s, so at the top rate an answer slower than that counts as lost.
Goal: at most 2 µs of daemon CPU per frame at 50,000 frames/s.

| fast path | rate asked | offered/s | arpshare p50 / p99 | lost | daemon CPU per frame | BPF per frame per host | softirq per frame | machine per frame | kernel p50 / p99 | lost | kernel: softirq per frame |
|---|---|---|---|---|---|---|---|---|---|---|---|
%s
`, today(), strings.TrimSuffix(strings.TrimSpace(idleNote), ";"), len(l.Hosts), replyCount, replyCount, strings.Join(rateRows, "\n"))}
	return []section{latency, rates, ndpSection(l, ndpLatency, ndpRates)}, nil
}

// replyPath measures one fast path setting: table rows for both sections,
// a summary line, and the daemons' idle CPU.
func replyPath(l *lab.Lab, fp string) (latencyRows, rateRows []string, summary string, idle time.Duration, err error) {
	ctx := context.Background()
	c := l.Clients[0]
	kernel := l.Hosts[0].Addr
	load := func(target netip.Addr, rate int, d time.Duration) lab.ARPLoad {
		return lab.ARPLoad{Target: target, First: replySenders, Senders: replyCount, Rate: rate, For: d}
	}
	// Warm up: the kernel makes its neighbour entries, arpshare learns the
	// senders (and, with the fast path, hands its decisions to the kernel).
	for _, t := range []netip.Addr{kernel, lab.VIP} {
		if _, err := c.ARPBench(ctx, load(t, 500, time.Second)); err != nil {
			return nil, nil, "", 0, err
		}
	}
	time.Sleep(time.Second)

	say("reply latency at 2,000 requests/s, fast path %s: arpshare for %s against the kernel of %s for its own address, 3 rounds of 5 s each", fp, lab.VIP, l.Hosts[0].Name)
	var allA, allK lab.ARPRun
	for round := 1; round <= 3; round++ {
		k, err := c.ARPBench(ctx, load(kernel, 2000, 5*time.Second))
		if err != nil {
			return nil, nil, "", 0, err
		}
		a, err := c.ARPBench(ctx, load(lab.VIP, 2000, 5*time.Second))
		if err != nil {
			return nil, nil, "", 0, err
		}
		say("  round %d: arpshare p50 %s p99 %s loss %.2f%%; kernel p50 %s p99 %s loss %.2f%%", round,
			us(a.Quantile(.5)), us(a.Quantile(.99)), 100*a.Loss(), us(k.Quantile(.5)), us(k.Quantile(.99)), 100*k.Loss())
		latencyRows = append(latencyRows, fmt.Sprintf("| %s | %d | %s / %s | %.2f %% | %s / %s | %.2f %% | %.2f× |", fp, round,
			us(a.Quantile(.5)), us(a.Quantile(.99)), 100*a.Loss(), us(k.Quantile(.5)), us(k.Quantile(.99)), 100*k.Loss(),
			float64(a.Quantile(.5))/float64(k.Quantile(.5))))
		allA.Latencies = append(allA.Latencies, a.Latencies...)
		allK.Latencies = append(allK.Latencies, k.Latencies...)
	}
	slices.Sort(allA.Latencies)
	slices.Sort(allK.Latencies)
	ratio := float64(allA.Quantile(.5)) / float64(allK.Quantile(.5))
	summary = fmt.Sprintf("**Fast path %s, all rounds: arpshare p50 %s, p99 %s; kernel p50 %s, p99 %s; ratio of medians %.2f×.**",
		fp, us(allA.Quantile(.5)), us(allA.Quantile(.99)), us(allK.Quantile(.5)), us(allK.Quantile(.99)), ratio)
	say("  %s", summary)

	// Idle CPU, to take out of the per-frame figures: gossip and timers.
	b0, err := cpu(l)
	if err != nil {
		return nil, nil, "", 0, err
	}
	const idleFor = 5 * time.Second
	time.Sleep(idleFor)
	b1, err := cpu(l)
	if err != nil {
		return nil, nil, "", 0, err
	}
	idle = cpuPerHost(b0, b1)
	say("idle: %s of CPU per daemon in %s", idle, idleFor)

	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		return nil, nil, "", 0, fmt.Errorf("enable BPF statistics: %w", err)
	}
	defer stats.Close()
	for _, rate := range []int{5000, 10000, 20000, 50000} {
		const d = 4 * time.Second
		// The same machine-wide softirq figure while the kernel answers
		// for its own address: the baseline of a reply made in softirq.
		k0, err := lab.MachineCPU()
		if err != nil {
			return nil, nil, "", 0, err
		}
		k, err := c.ARPBench(ctx, load(kernel, rate, d))
		if err != nil {
			return nil, nil, "", 0, err
		}
		k1, err := lab.MachineCPU()
		if err != nil {
			return nil, nil, "", 0, err
		}
		kernelSoftirq := float64(k1.SoftIRQ-k0.SoftIRQ) / float64(max(k.Sent, 1)) / float64(time.Microsecond)
		var cost kernelCost
		before, err := cpu(l)
		if err != nil {
			return nil, nil, "", 0, err
		}
		m0, err := lab.MachineCPU()
		if err != nil {
			return nil, nil, "", 0, err
		}
		bpf0, runs0, err := lab.FastPathRuns(fastpath.ProgramName)
		if err != nil {
			return nil, nil, "", 0, err
		}
		start := time.Now()
		a, err := c.ARPBench(ctx, load(lab.VIP, rate, d))
		if err != nil {
			return nil, nil, "", 0, err
		}
		after, err := cpu(l)
		if err != nil {
			return nil, nil, "", 0, err
		}
		m1, err := lab.MachineCPU()
		if err != nil {
			return nil, nil, "", 0, err
		}
		bpf1, runs1, err := lab.FastPathRuns(fastpath.ProgramName)
		if err != nil {
			return nil, nil, "", 0, err
		}
		cost.frames = a.Sent
		cost.daemon = cpuPerHost(before, after) - idle*time.Since(start)/idleFor
		cost.bpf, cost.bpfRuns = (bpf1-bpf0)/time.Duration(len(l.Hosts)), runs1-runs0
		cost.softirq, cost.busy = m1.SoftIRQ-m0.SoftIRQ, m1.Busy-m0.Busy
		offered := float64(a.Sent) / d.Seconds()
		daemonUs := fmt.Sprintf("%.2f µs", cost.perFrame(cost.daemon))
		if cost.daemon <= 0 {
			daemonUs = "≤ 0 (within the idle use)"
		}
		bpfNs := "–"
		if cost.bpfRuns > 0 {
			bpfNs = fmt.Sprintf("%.0f ns", cost.perFrame(cost.bpf)*1000)
		}
		say("  %d/s (offered %.0f/s), fast path %s: arpshare p50 %s p99 %s loss %.2f%%, daemon CPU %.2f µs per frame per daemon, BPF %s per frame per host (%d runs), softirq %.2f µs and machine %.2f µs per frame; kernel p50 %s p99 %s loss %.2f%%, softirq %.2f µs per frame",
			rate, offered, fp, us(a.Quantile(.5)), us(a.Quantile(.99)), 100*a.Loss(), cost.perFrame(cost.daemon), bpfNs, cost.bpfRuns,
			cost.perFrame(cost.softirq), cost.perFrame(cost.busy), us(k.Quantile(.5)), us(k.Quantile(.99)), 100*k.Loss(), kernelSoftirq)
		rateRows = append(rateRows, fmt.Sprintf("| %s | %d | %.0f | %s / %s | %.2f %% | %s | %s | %.2f µs | %.2f µs | %s / %s | %.2f %% | %.2f µs |", fp, rate, offered,
			us(a.Quantile(.5)), us(a.Quantile(.99)), 100*a.Loss(), daemonUs, bpfNs,
			cost.perFrame(cost.softirq), cost.perFrame(cost.busy), us(k.Quantile(.5)), us(k.Quantile(.99)), 100*k.Loss(), kernelSoftirq))
	}
	return latencyRows, rateRows, summary, idle, nil
}

// ownerMACs returns each host's serving MAC, as gossip tells it.
func ownerMACs(l *lab.Lab) (map[string]net.HardwareAddr, error) {
	s, err := l.Hosts[0].Status()
	if err != nil {
		return nil, err
	}
	out := map[string]net.HardwareAddr{}
	for _, m := range s.Members {
		if len(m.MACs) > 0 {
			mac, err := net.ParseMAC(m.MACs[0])
			if err != nil {
				return nil, err
			}
			out[m.Name] = mac
		}
	}
	return out, nil
}

func mb(b int64) float64 { return float64(b) / 1e6 }

// repointRounds lists the re-pointing rounds the host's daemon began from
// since until the window [start, end) closed, as its log says: why
// (periodic, settle, moved), how many clients, packets each if more than
// one, and when, in seconds from start (a round begun before it may still
// be sending); "none" if it began none.
func repointRounds(h *lab.Host, since, start, end time.Time) (string, error) {
	lines, err := h.LogSince(since)
	if err != nil {
		return "", err
	}
	var rounds []string
	for _, l := range lines {
		if !l.At.Before(end) {
			break
		}
		why := ""
		switch {
		case strings.Contains(l.Text, `msg="re-asserting this host's clients"`):
			why = logField(l.Text, "why")
		case strings.Contains(l.Text, `msg="cluster settled: re-pointing this host's clients once more"`):
			why = "settle"
		case strings.Contains(l.Text, `msg="re-pointing clients to this host"`):
			why = "moved" // up to three packets each
		default:
			continue
		}
		each := ""
		if n := logField(l.Text, "packets_each"); n != "?" && n != "1" {
			each = " ×" + n
		}
		rounds = append(rounds, fmt.Sprintf("%s %s%s at %+.0f s", why, logField(l.Text, "clients"), each, l.At.Sub(start).Seconds()))
	}
	if len(rounds) == 0 {
		return "none", nil
	}
	return strings.Join(rounds, ", "), nil
}

// pushPulls counts, from the hosts' logs, the push-pull exchanges each host
// took part in during [start, end), those it began and those a peer began
// with it, as "n" or "n (j joins)": memberlist names the peer of a
// periodic exchange, and gives only the address of a join's.
func pushPulls(hosts []*lab.Host, start, end time.Time) (map[string]string, error) {
	byAddr := map[string]string{}
	for _, h := range hosts {
		byAddr[h.Addr.String()] = h.Name
	}
	n, joins := map[string]int{}, map[string]int{}
	for _, h := range hosts {
		lines, err := h.LogSince(start)
		if err != nil {
			return nil, err
		}
		for _, l := range lines {
			if !l.At.Before(end) {
				break
			}
			_, rest, ok := strings.Cut(l.Text, "memberlist: Initiating push/pull sync with: ")
			if !ok {
				continue
			}
			f := strings.Fields(rest)
			if len(f) == 0 {
				continue
			}
			peer := f[0]
			if host, _, ok := strings.Cut(peer, ":"); ok {
				peer = byAddr[host]
				joins[h.Name]++
				joins[peer]++
			}
			n[h.Name]++
			n[peer]++
		}
	}
	out := map[string]string{}
	for _, h := range hosts {
		out[h.Name] = fmt.Sprint(n[h.Name])
		if joins[h.Name] > 0 {
			out[h.Name] += fmt.Sprintf(" (%d joins)", joins[h.Name])
		}
	}
	return out, nil
}

// logField returns the value of key=value in a daemon log line.
func logField(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return "?"
}
