package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/config"
	"github.com/arpshare/arpshare/internal/lab"
)

// The idle mode: what a daemon costs when nothing happens. Every client is
// served once (so each daemon holds clients), then no frame is sent; each
// daemon's CPU time and wake-ups are counted over idleWindow, and the same
// for a bare memberlist with the daemon's gossip settings, one per host in
// the same namespaces, as the floor: what the failover budget (the probe
// rate) costs by itself.
const (
	idleWindow = 60 * time.Second
	// idleSettle lets the lab settle first: joins, the settle round
	// (2 s after the last view change), clients re-pointed and confirmed.
	idleSettle = 15 * time.Second
	floorPort  = 7947
)

// idleCost is what one process used over a window.
type idleCost struct {
	cpu     time.Duration
	wakeups uint64 // context switches of all its threads
}

func (c idleCost) percent(d time.Duration) float64 { return 100 * float64(c.cpu) / float64(d) }
func (c idleCost) perSecond(d time.Duration) float64 {
	return float64(c.wakeups) / d.Seconds()
}

// procCost reads the CPU time and the context switches (voluntary and not:
// each is a wake-up of some thread) of process pid so far, summed over its
// threads. The CPU time is the scheduler's own count in nanoseconds
// (/proc/<pid>/task/*/schedstat), not /proc/<pid>/stat's, which charges a
// whole clock tick to the task it finds running, and so charges a process
// that wakes often for a few microseconds by the ticks that happen to hit
// it (perf stat's task-clock counted about a quarter less for these).
func procCost(pid int) (idleCost, error) {
	var c idleCost
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	if err != nil || len(tasks) == 0 {
		return c, fmt.Errorf("process %d: no threads: %v", pid, err)
	}
	for _, t := range tasks {
		b, err := os.ReadFile(t + "/schedstat")
		if err != nil {
			continue // the thread ended
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		ns, _ := strconv.ParseInt(f[0], 10, 64)
		c.cpu += time.Duration(ns)
		b, err = os.ReadFile(t + "/status")
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(l, ":")
			if k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches" {
				n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				c.wakeups += n
			}
		}
	}
	return c, nil
}

// measureIdle returns what each process used over idleWindow.
func measureIdle(pids []int) ([]idleCost, error) {
	before := make([]idleCost, len(pids))
	for i, pid := range pids {
		c, err := procCost(pid)
		if err != nil {
			return nil, err
		}
		before[i] = c
	}
	time.Sleep(idleWindow)
	out := make([]idleCost, len(pids))
	for i, pid := range pids {
		c, err := procCost(pid)
		if err != nil {
			return nil, err
		}
		out[i] = idleCost{cpu: c.cpu - before[i].cpu, wakeups: c.wakeups - before[i].wakeups}
	}
	return out, nil
}

// summary is the mean, lowest and highest of the processes' costs.
func summary(cs []idleCost) (mean, lo, hi idleCost) {
	lo, hi = cs[0], cs[0]
	for _, c := range cs {
		mean.cpu += c.cpu
		mean.wakeups += c.wakeups
		if c.cpu < lo.cpu {
			lo = c
		}
		if c.cpu > hi.cpu {
			hi = c
		}
	}
	mean.cpu /= time.Duration(len(cs))
	mean.wakeups /= uint64(len(cs))
	return mean, lo, hi
}

func costRow(what string, n int, cs []idleCost) string {
	mean, lo, hi := summary(cs)
	say("  %s, %d hosts: %.2f %% of a core per process (%.2f–%.2f), %.0f wake-ups/s", what, n,
		mean.percent(idleWindow), lo.percent(idleWindow), hi.percent(idleWindow), mean.perSecond(idleWindow))
	return fmt.Sprintf("| %s | %d | %.2f %% | %.2f – %.2f %% | %.0f |", what, n,
		mean.percent(idleWindow), lo.percent(idleWindow), hi.percent(idleWindow), mean.perSecond(idleWindow))
}

// idleSections measures, in a lab of its own for each host count, the
// daemons at rest and then the bare memberlist floor.
func idleSections(bin string, opts benchOptions) ([]section, error) {
	var rows []string
	for _, n := range opts.idleHosts {
		r, err := idleLab(bin, n, opts.profiles)
		if err != nil {
			return nil, err
		}
		rows = append(rows, r...)
	}
	counts := make([]string, len(opts.idleHosts))
	for i, n := range opts.idleHosts {
		counts[i] = strconv.Itoa(n)
	}
	return []section{{"Idle cost", fmt.Sprintf(`Written by `+"`go run ./examples/lab -bench -modes idle -idle-hosts %s`"+` on %s.
A lab of its own for each host count, 20 clients, the default gossip
timings (probe every %s, gossip every %s). Every client connects to the
VIP once, so every daemon holds clients; then nothing is sent for %s, and
after that the daemons are measured over %s: *CPU* is the daemon's CPU time
(user and system, the scheduler's count in nanoseconds summed over its
threads, /proc/<pid>/task/*/schedstat) over the window, as a share of one
core, the mean over the daemons and the lowest and highest; *wake-ups* are
the context switches of all its threads (voluntary and not, from
/proc/<pid>/task/*/status) per second, the mean over the daemons. Beside
each daemon, in its host's namespace and on another port, a bare
memberlist with the daemons' gossip settings (the same probe, gossip and
push-pull intervals, encrypted with a 32-byte key) runs from the start of
the quiet period: the floor that the failover budget costs by itself. It
is measured the same way over the same window (measured a minute apart,
the two differed by as much as the shared machine's load changed), and
the last row of each count is the difference: what arpshare adds to it.
Goal: at most
0.3 %% of a core per daemon with 3 hosts, 0.5 %% with 16; memberlist's own
probes and gossip at these timings (kept: they are the failover budget)
cost more than that by themselves, so the goal is within reach only of
what arpshare adds.

| process | hosts | CPU (mean) | lowest – highest | wake-ups/s |
|---|---|---|---|---|
%s

What still runs at rest besides memberlist, by design: the gossip loop's
tick every probe interval, which notices when this host runs late (the
systemd watchdog counts on its turns too) and builds a view only when one
would differ (a member that stopped answering this host's pings, which
memberlist does not report, or started again; a held death's time up),
the dead-member rechecks with every second tick but only for a minute
after a death, the look for configured peers to re-join every 10 s, the
sysctl guard every 5 s, the systemd watchdog ping every third of
WATCHDOG_USEC (here 3 s), the spreader's sweep every second, the client
table's expiry every minute, and the periodic re-assertion (every minute,
one packet per client this host owns, spread over the minute: the
re-pointer wakes for each packet, not every tick). The handover's sweep
runs only while clients are handed over (or a VIP or an interface is
pending) and learns of re-made interfaces from netlink; the fast path's
reports are read only after the kernel answered someone (it wakes the
daemon); the re-pointer ticks only while failover packets are owed;
sockets block without timeouts. Each of these wakes the Go runtime's
threads (its monitor, an idle thread to run the goroutine, the network
poller), several context switches each. The rest of the difference is the
runtime's share of the daemon's larger heap and goroutines. Memberlist
allocates a 64 KiB buffer per datagram received (-profiles DIR writes each
daemon's allocations over 20 s): the bare memberlist, at GOGC's 100 %%,
collects every few seconds; the daemon lets its heap grow 24 MiB past what
is live before it collects (internal/gcfloor), for an RSS larger by up to
as much. Both run with memberlist's compression off, as the daemon does:
it made a new LZW compressor for every datagram sent, pings and acks too,
and cost about a third of each process's CPU at rest (with it, 3 hosts:
arpshare 1.30 %%, the bare memberlist 0.89 %%, in this section at commit
5872295: `+"`git show 5872295:docs/benchmarks.md`"+`).
`, strings.Join(counts, ","), today(), config.DefaultProbeInterval, config.DefaultGossipInterval, idleSettle, idleWindow, strings.Join(rows, "\n"))}}, nil
}

// idleLab measures the daemons of an n-host lab at rest and, in the same
// window, the floor: a bare memberlist beside each daemon (measured apart,
// the two rows differed by as much as the load of the shared machine
// changed between them).
func idleLab(bin string, n int, profiles string) ([]string, error) {
	l, err := newLab(lab.Options{Hosts: n, Clients: 20, Binary: bin, Config: lab.HostConfig{Pprof: profiles != ""}})
	if err != nil {
		return nil, err
	}
	defer closeLab(l)
	say("idle: %d hosts (lab %s)", n, l.Suffix)
	if err := startAll(l.Hosts); err != nil {
		return nil, err
	}
	if served := serve(l); len(served) != len(l.Clients) {
		return nil, fmt.Errorf("%d hosts: only %d of %d clients served", n, len(served), len(l.Clients))
	}
	floor, stop, err := startFloor(l)
	if err != nil {
		return nil, err
	}
	defer stop()
	time.Sleep(idleSettle)
	var pids []int
	for _, h := range l.Hosts {
		pids = append(pids, h.PID())
	}
	say("  measuring the daemons and memberlist alone for %s", idleWindow)
	costs, err := measureIdle(append(pids, floor...))
	if err != nil {
		return nil, err
	}
	daemons, bare := costs[:len(pids)], costs[len(pids):]
	rows := []string{costRow("arpshare", n, daemons), costRow("memberlist alone", n, bare)}
	if err := idleProfiles(l, profiles); err != nil {
		return nil, err
	}
	d, _, _ := summary(daemons)
	f, _, _ := summary(bare)
	say("  arpshare's own, beyond memberlist: %+.2f %% of a core, %+.0f wake-ups/s", d.percent(idleWindow)-f.percent(idleWindow), d.perSecond(idleWindow)-f.perSecond(idleWindow))
	return append(rows, fmt.Sprintf("| arpshare less memberlist alone | %d | %+.2f %% | | %+.0f |", n,
		d.percent(idleWindow)-f.percent(idleWindow), d.perSecond(idleWindow)-f.perSecond(idleWindow))), nil
}

// startFloor runs a bare memberlist in every host's namespace, beside its
// daemon (on floorPort), and returns their pids and how to stop them.
func startFloor(l *lab.Lab) ([]int, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	key := make([]byte, 32)
	rand.Read(key)
	var peers []string
	for _, h := range l.Hosts[:min(3, len(l.Hosts))] {
		peers = append(peers, fmt.Sprintf("%s:%d", h.Addr, floorPort))
	}
	var cmds []*exec.Cmd
	stop := func() {
		for _, cmd := range cmds {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	var pids []int
	for _, h := range l.Hosts {
		cmd := exec.Command("ip", "netns", "exec", h.NS, self, "-memberlist-floor",
			"-floor-name", h.Name, "-floor-bind", h.Addr.String(), "-floor-peers", strings.Join(peers, ","), "-floor-key", hex.EncodeToString(key))
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			stop()
			return nil, nil, err
		}
		cmds = append(cmds, cmd)
		pids = append(pids, cmd.Process.Pid)
	}
	say("  memberlist alone: %d processes beside the daemons; both settle for %s", len(pids), idleSettle)
	return pids, stop, nil
}

// memberlistFloor is the process startFloor starts: one memberlist with the
// daemon's gossip settings, until it is killed.
func memberlistFloor(name, bind, peers, key string) error {
	mc := memberlist.DefaultLANConfig()
	mc.Name = name
	mc.BindAddr, mc.AdvertiseAddr = bind, bind
	mc.BindPort, mc.AdvertisePort = floorPort, floorPort
	mc.ProbeInterval = config.DefaultProbeInterval
	mc.ProbeTimeout = config.DefaultProbeTimeout
	mc.SuspicionMult = config.DefaultSuspicionMult
	mc.GossipInterval = config.DefaultGossipInterval
	mc.TCPTimeout = 2 * time.Second
	mc.PushPullInterval = gossip.PushPullInterval
	mc.Label = "lab"
	mc.EnableCompression = false
	mc.Logger = log.New(io.Discard, "", 0)
	k, err := hex.DecodeString(key)
	if err != nil {
		return err
	}
	if mc.Keyring, err = memberlist.NewKeyring([][]byte{k}, k); err != nil {
		return err
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return err
	}
	defer ml.Shutdown()
	for {
		if _, err := ml.Join(strings.Split(peers, ",")); err == nil && ml.NumMembers() > 1 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	return nil
}

// floorFlags are the flags of the memberlist floor process.
type floorFlags struct {
	on                     *bool
	name, bind, peers, key *string
}

func addFloorFlags() floorFlags {
	return floorFlags{
		on:    flag.Bool("memberlist-floor", false, "internal: run a bare memberlist for the idle mode's floor"),
		name:  flag.String("floor-name", "", "internal"),
		bind:  flag.String("floor-bind", "", "internal"),
		peers: flag.String("floor-peers", "", "internal"),
		key:   flag.String("floor-key", "", "internal"),
	}
}

// idleProfiles writes, if dir is set, each daemon's CPU profile at rest
// over idleProfileFor (<host>-idle.cpu.pb.gz) and its allocations before
// and after (allocs0, allocs1), its goroutines
// (<host>-idle.goroutine.txt), and the first daemon's runtime trace over
// 5 s (<host>-idle.trace): what wakes a daemon at rest, and for what.
// It runs after the measured window: the profiler's own ticks would
// count in it.
func idleProfiles(l *lab.Lab, dir string) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	say("  profiling the daemons for %s into %s", idleProfileFor, dir)
	save := func(h *lab.Host, name, file string) error {
		b, err := h.Profile(name)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, h.Name+"-idle."+file), b, 0o644)
		}
		return err
	}
	errs := make(chan error, len(l.Hosts))
	for _, h := range l.Hosts {
		go func() {
			// The allocations over the window: go tool pprof -base
			// <host>-idle.allocs0.pb.gz <host>-idle.allocs1.pb.gz.
			err := save(h, "allocs", "allocs0.pb.gz")
			err = errors.Join(err, save(h, fmt.Sprintf("profile?seconds=%d", int(idleProfileFor.Seconds())), "cpu.pb.gz"))
			errs <- errors.Join(err, save(h, "allocs", "allocs1.pb.gz"))
		}()
	}
	var err error
	for range l.Hosts {
		err = errors.Join(err, <-errs)
	}
	return errors.Join(err, save(l.Hosts[0], "trace?seconds=5", "trace"), save(l.Hosts[0], "goroutine?debug=1", "goroutine.txt"))
}

// idleProfileFor is how long idleProfiles profiles: within Host.Profile's
// timeout.
const idleProfileFor = 20 * time.Second
