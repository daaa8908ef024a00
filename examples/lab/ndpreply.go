package main

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/arpshare/arpshare/internal/bpf/fastpath"
	"github.com/arpshare/arpshare/internal/lab"
)

// The reply path for IPv6: the same made-up senders, from fd00::4000 on,
// soliciting the IPv6 VIP (answered by arpshare) and the first host's own
// address (answered by its kernel).
var replySenders6 = netip.MustParseAddr("fd00::4000")

func ndpLoad(target netip.Addr, rate int, d time.Duration) lab.ARPLoad {
	return lab.ARPLoad{Target: target, First: replySenders6, Senders: replyCount, Rate: rate, For: d}
}

// ndpReplyPath measures the NDP reply path with one fast path setting: the
// latency rows (3 rounds of 5 s at 2,000 solicitations a second) and the
// rate rows; idle is the daemons' CPU per 5 s at rest (replyPath's).
func ndpReplyPath(l *lab.Lab, fp string, idle time.Duration) (latencyRows, rateRows []string, err error) {
	ctx := context.Background()
	c := l.Clients[0]
	kernel := l.Hosts[0].Addr6
	for _, t := range []netip.Addr{kernel, lab.VIP6} {
		if _, err := c.NDPBench(ctx, ndpLoad(t, 500, time.Second)); err != nil {
			return nil, nil, err
		}
	}
	time.Sleep(time.Second)
	say("NDP reply latency at 2,000 solicitations/s, fast path %s: arpshare for %s against the kernel of %s for its own address", fp, lab.VIP6, l.Hosts[0].Name)
	var allA, allK lab.ARPRun
	for round := 1; round <= 3; round++ {
		k, err := c.NDPBench(ctx, ndpLoad(kernel, 2000, 5*time.Second))
		if err != nil {
			return nil, nil, err
		}
		a, err := c.NDPBench(ctx, ndpLoad(lab.VIP6, 2000, 5*time.Second))
		if err != nil {
			return nil, nil, err
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
	latencyRows = append(latencyRows, fmt.Sprintf("| %s | all | %s / %s | | %s / %s | | **%.2f×** |", fp,
		us(allA.Quantile(.5)), us(allA.Quantile(.99)), us(allK.Quantile(.5)), us(allK.Quantile(.99)),
		float64(allA.Quantile(.5))/float64(allK.Quantile(.5))))
	rateRows, err = ndpRates(l, fp, idle)
	return latencyRows, rateRows, err
}

// ndpRates measures loss, latency and CPU per solicitation at rising rates.
func ndpRates(l *lab.Lab, fp string, idle time.Duration) ([]string, error) {
	ctx := context.Background()
	c := l.Clients[0]
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		return nil, fmt.Errorf("enable BPF statistics: %w", err)
	}
	defer stats.Close()
	var rows []string
	for _, rate := range []int{10000, 50000} {
		const d = 4 * time.Second
		k, err := c.NDPBench(ctx, ndpLoad(l.Hosts[0].Addr6, rate, d))
		if err != nil {
			return nil, err
		}
		before, err := cpu(l)
		if err != nil {
			return nil, err
		}
		bpf0, runs0, err := lab.FastPathRuns(fastpath.NDPProgramName)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		a, err := c.NDPBench(ctx, ndpLoad(lab.VIP6, rate, d))
		if err != nil {
			return nil, err
		}
		after, err := cpu(l)
		if err != nil {
			return nil, err
		}
		bpf1, runs1, err := lab.FastPathRuns(fastpath.NDPProgramName)
		if err != nil {
			return nil, err
		}
		cost := kernelCost{frames: a.Sent, daemon: cpuPerHost(before, after) - idle*time.Since(start)/(5*time.Second)}
		cost.bpf, cost.bpfRuns = (bpf1-bpf0)/time.Duration(len(l.Hosts)), runs1-runs0
		daemonUs := fmt.Sprintf("%.2f µs", cost.perFrame(cost.daemon))
		if cost.daemon <= 0 {
			daemonUs = "≤ 0 (within the idle use)"
		}
		bpfNs := "–"
		if cost.bpfRuns > 0 {
			bpfNs = fmt.Sprintf("%.0f ns", cost.perFrame(cost.bpf)*1000)
		}
		offered := float64(a.Sent) / d.Seconds()
		say("  NDP %d/s (offered %.0f/s), fast path %s: arpshare p50 %s p99 %s loss %.2f%%, daemon CPU %s per frame per daemon, BPF %s per frame per host; kernel p50 %s p99 %s loss %.2f%%",
			rate, offered, fp, us(a.Quantile(.5)), us(a.Quantile(.99)), 100*a.Loss(), daemonUs, bpfNs, us(k.Quantile(.5)), us(k.Quantile(.99)), 100*k.Loss())
		rows = append(rows, fmt.Sprintf("| %s | %d | %.0f | %s / %s | %.2f %% | %s | %s | %s / %s | %.2f %% |", fp, rate, offered,
			us(a.Quantile(.5)), us(a.Quantile(.99)), 100*a.Loss(), daemonUs, bpfNs, us(k.Quantile(.5)), us(k.Quantile(.99)), 100*k.Loss()))
	}
	return rows, nil
}

// ndpSection is the NDP reply path's section of the benchmarks page.
func ndpSection(l *lab.Lab, latencyRows, rateRows []string) section {
	return section{"Reply path: NDP", fmt.Sprintf(`Written by `+"`go run ./examples/lab -bench -modes reply`"+` on %s. The
reply mode's lab, after its ARP runs with each fast path setting: one client
namespace sends Neighbor Solicitations (to the target's solicited-node
group, hop limit 255, with the sender's link-layer address, as a kernel
resolving a neighbour sends them) from %d made-up senders (%s on),
alternately for the IPv6 VIP %s (answered by arpshare on the sender's
owner) and for %s, %s's own address (answered by its kernel); the time is
from the send to the advertisement's arrival. Then at rising rates, 4 s
each: *daemon CPU* is a daemon's CPU time during the run, less its idle use,
over the solicitations sent, averaged over the daemons; *BPF* is the NDP
program's own run time per solicitation per host (BPF_ENABLE_STATS). Goal:
arpshare's median at most 1.5× the kernel's, CPU per frame as for ARP.
With the fast path off, the daemon answers through the host's IPv6 stack,
which must first resolve the sender's address with a solicitation of its
own: a real client answers it, and gets its advertisement a round trip
later, but the made-up senders never do, so most of those answers are
never sent (the loss column) and the rest went out while the host's kernel
still held an entry for the sender from its own answers. The off rows
measure that, not the daemon; the fast path answers at the link layer, to
the MAC of the solicitation's option, and has no such wait.

| fast path | round | arpshare p50 / p99 | lost | kernel p50 / p99 | lost | p50 ratio |
|---|---|---|---|---|---|---|
%s

| fast path | rate asked | offered/s | arpshare p50 / p99 | lost | daemon CPU per frame | BPF per frame per host | kernel p50 / p99 | lost |
|---|---|---|---|---|---|---|---|---|
%s
`, today(), replyCount, replySenders6, lab.VIP6, l.Hosts[0].Addr6, l.Hosts[0].Name, strings.Join(latencyRows, "\n"), strings.Join(rateRows, "\n"))}
}
