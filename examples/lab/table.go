package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/config"
	"github.com/arpshare/arpshare/internal/lab"
)

// tablePlan spreads the table mode's made-up clients over VIPs: a client
// is an address asking for a VIP, and the lab has addresses for maxTable,
// so beyond that each address asks for more VIPs (the table's entries, its
// gossip and its memory are per VIP and address alike).
type tablePlan struct {
	n       int
	vips    []netip.Addr
	senders int // addresses asking for each VIP; the last may have fewer
}

func planTable(n int) (tablePlan, error) {
	k := (n + maxTable - 1) / maxTable
	if n < 1 || k > 1+lab.MaxTableVIPs {
		return tablePlan{}, fmt.Errorf("from 1 to %d made-up clients: the lab has addresses for %d, asking for up to %d VIPs", maxTable*(1+lab.MaxTableVIPs), maxTable, 1+lab.MaxTableVIPs)
	}
	p := tablePlan{n: n, vips: []netip.Addr{lab.VIP}, senders: (n + k - 1) / k}
	for i := 1; i < k; i++ {
		p.vips = append(p.vips, lab.TableVIP(i))
	}
	return p, nil
}

// clients returns how many addresses ask for VIP j.
func (p tablePlan) clients(j int) int { return min(p.senders, p.n-j*p.senders) }

// maxClients is node.max_clients for the plan: once all are protected they
// must fit in 7/8 of the table (see arp.ClientTable).
func (p tablePlan) maxClients() int { return max(config.DefaultMaxClients, p.n*5/4) }

func (p tablePlan) String() string {
	if len(p.vips) == 1 {
		return fmt.Sprintf("%d addresses (%s on) asking for the VIP %s", p.n, tableSenders, lab.VIP)
	}
	return fmt.Sprintf("%d addresses (%s on) asking each for %d VIPs (%s and %s to %s)", p.senders, tableSenders,
		len(p.vips), lab.VIP, lab.TableVIP(1), lab.TableVIP(len(p.vips)-1))
}

const tableRate = 10000 // requests a second

// tableSections restarts the daemons with the VIPs and table size the
// clients need, makes the clients up (each asks once by broadcast, then
// once more by unicast to its owner), measures every daemon's memory, and
// what goes through each host's port for 90 s, by kind.
func tableSections(l *lab.Lab, opts benchOptions) ([]section, error) {
	p, err := planTable(opts.table)
	if err != nil {
		return nil, err
	}
	hc := lab.HostConfig{IPv6VIP: true, TableVIPs: len(p.vips) - 1, MaxClients: p.maxClients(), Metrics: true, Pprof: true}
	if opts.timings != "" {
		g, err := parseSweep(opts.timings)
		if err != nil {
			return nil, err
		}
		hc.Gossip = g[0].config()
	}
	say("table: restarting the daemons with %d VIPs and node.max_clients = %d", len(p.vips)+1, hc.MaxClients)
	for _, h := range l.Hosts {
		if err := h.Stop(10 * time.Second); err != nil {
			return nil, fmt.Errorf("%s: stop: %w", h.Name, err)
		}
		if err := h.WriteConfig(hc); err != nil {
			return nil, err
		}
	}
	if err := startAll(l.Hosts); err != nil {
		return nil, err
	}
	profiles := opts.profiles
	if profiles == "" {
		if profiles, err = os.MkdirTemp("", "arpshare-table-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(profiles)
	}
	before, err := sampleHosts(l.Hosts)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := fillTable(l, p); err != nil {
		return nil, err
	}
	filled, took := time.Now(), time.Since(start).Round(time.Second)
	time.Sleep(3 * time.Second)
	after, err := sampleHosts(l.Hosts)
	if err != nil {
		return nil, err
	}
	if err := saveProfiles(l, profiles, "filled", "heap"); err != nil {
		return nil, err
	}
	g, err := gossipSection(l, p, filled)
	if err != nil {
		return nil, err
	}
	// At rest: the heap profile with gc=1 collects first, so that what
	// it holds is what is live; RSS right after, before anything else
	// asks the daemon for something.
	if err := saveProfiles(l, profiles, "rest", "heap?gc=1"); err != nil {
		return nil, err
	}
	rest, err := restSamples(l, profiles)
	if err != nil {
		return nil, err
	}
	memory, err := memorySection(l, p, [3][]hostSample{before, after, rest}, took, profiles)
	if err != nil {
		return nil, err
	}
	return []section{memory, g}, nil
}

// protectAfter is when fillTable's clients ask again: the client table's
// protectSpan (5 minutes), and a margin.
const protectAfter = 5*time.Minute + 5*time.Second

// fillTable makes the clients up: each asks for its VIP once by
// broadcast (every daemon learns it, and none gossips it: each heard it),
// then, protectAfter later, once more by unicast to its owner, as a Linux
// client refreshing a stale entry does: only the owner hears it, takes it
// for a real machine (it kept asking for minutes), marks it protected, and
// must tell the others. This is the most gossip a table of n clients
// makes: every one of them changed at once.
func fillTable(l *lab.Lab, p tablePlan) error {
	macs, err := ownerMACs(l)
	if err != nil {
		return err
	}
	var cs []gossip.Candidate
	for _, h := range l.Hosts {
		cs = append(cs, gossip.Candidate{Name: h.Name, Weight: 1})
	}
	ctx := context.Background()
	start := time.Now()
	for _, unicast := range []bool{false, true} {
		if unicast {
			// Each client asks again protectAfter after it first did,
			// in the same order at the same rate.
			wait := time.Until(start.Add(protectAfter))
			say("  waiting %s: a client that asks again %s after it first did is protected", wait.Round(time.Second), protectAfter)
			time.Sleep(wait)
		}
		for j, vip := range p.vips {
			load := lab.ARPLoad{Target: vip, First: tableSenders, Senders: p.clients(j), Rate: tableRate,
				For: time.Duration(p.clients(j)/tableRate+5) * time.Second, Count: p.clients(j)}
			how := "broadcast"
			if unicast {
				how = "unicast to the owner"
				load.To = func(i int) net.HardwareAddr {
					ip, _ := lab.BenchSender(tableSenders, i)
					return macs[policy.Rendezvous(cs, vip, ip)]
				}
			}
			run, err := l.Clients[0].ARPBench(ctx, load)
			if err != nil {
				return err
			}
			say("  %d clients ask for %s by %s, %d a second: sent %d, answered %d", p.clients(j), vip, how, tableRate, run.Sent, run.Answered)
		}
	}
	return nil
}

// hostSample is what a daemon holds, and what its gossip carried so far.
type hostSample struct {
	rss, heap, heapSys int64 // bytes: resident, Go heap in use, Go heap from the OS
	known              int   // clients, all VIPs
	// Client-table bytes and states in push-pulls, sent and received,
	// as handed to memberlist (arpshare_gossip_table_*).
	tableOut, tableIn   float64
	statesOut, statesIn float64
}

func sampleHosts(hosts []*lab.Host) ([]hostSample, error) {
	var out []hostSample
	for _, h := range hosts {
		var s hostSample
		var err error
		if s.rss, err = h.RSS(); err != nil {
			return nil, err
		}
		st, err := h.Status()
		if err != nil {
			return nil, err
		}
		for _, v := range st.VIPs {
			s.known += v.Clients
		}
		text, err := h.Scrape()
		if err != nil {
			return nil, err
		}
		m := parseMetrics(text)
		s.heap, s.heapSys = int64(m["go_memstats_heap_inuse_bytes"]), int64(m["go_memstats_heap_sys_bytes"])
		for k, v := range m {
			name, labels, _ := strings.Cut(k, "{")
			switch {
			case name == gossip.MetricTableBytes && strings.Contains(labels, `"sent"`):
				s.tableOut += v
			case name == gossip.MetricTableBytes && strings.Contains(labels, `"received"`):
				s.tableIn += v
			case name == gossip.MetricTableStates && strings.Contains(labels, `"sent"`):
				s.statesOut += v
			case name == gossip.MetricTableStates && strings.Contains(labels, `"received"`):
				s.statesIn += v
			}
		}
		out = append(out, s)
	}
	return out, nil
}

// parseMetrics reads Prometheus text: the series (name and labels, as
// written) to its value.
func parseMetrics(text string) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// memorySection writes the memory rows: before the clients, 3 s after,
// and at rest after the gossip window, garbage collected.
func memorySection(l *lab.Lab, p tablePlan, samples [3][]hostSample, took time.Duration, profiles string) (section, error) {
	before, after, rest := samples[0], samples[1], samples[2]
	top, err := heapTops(l, after, profiles)
	if err != nil {
		return section{}, err
	}
	var rows []string
	for i, h := range l.Hosts {
		listed := "–"
		if p.n <= maxTable {
			out, err := h.Run("clients", "--json")
			if err != nil {
				return section{}, err
			}
			var cs []json.RawMessage
			if err := json.Unmarshal([]byte(out), &cs); err != nil {
				return section{}, fmt.Errorf("%s: arpshare clients --json: %w", h.Name, err)
			}
			listed = fmt.Sprint(len(cs))
		}
		b, a, r := before[i], after[i], rest[i]
		per := float64(a.rss-b.rss) / float64(p.n)
		say("  %s: knows %d clients (`arpshare clients` lists %s); RSS %.1f MB -> %.1f MB, %.0f bytes a client; Go heap in use %.1f MB -> %.1f MB (%.1f MB from the OS); at rest, collected: RSS %.1f MB, heap in use %.1f MB (%.0f bytes a client)",
			h.Name, a.known, listed, mb(b.rss), mb(a.rss), per, mb(b.heap), mb(a.heap), mb(a.heapSys), mb(r.rss), mb(r.heap), float64(r.heap-b.heap)/float64(p.n))
		rows = append(rows, fmt.Sprintf("| %s | %d | %s | %.1f MB | %.1f MB | %.0f | %.1f MB | %.1f MB | %.1f MB | %.1f MB (%.0f a client) |",
			h.Name, a.known, listed, mb(b.rss), mb(a.rss), per, mb(a.heap), mb(a.heapSys), mb(r.rss), mb(r.heap), float64(r.heap-b.heap)/float64(p.n)))
	}
	cmd := fmt.Sprintf("go run ./examples/lab -bench -modes table -table %d", p.n)
	return section{fmt.Sprintf("Memory with %d clients", p.n), fmt.Sprintf(`Written by `+"`%s`"+` on %s. The daemons
are restarted with %d VIPs and `+"`node.max_clients = %d`"+`; then one client
namespace makes up %d clients: %s, distinct MACs. Each asks once by
broadcast, %d a second (every daemon hears it), then, %s after it first
asked, once more by unicast to its owner's MAC, as a Linux client refreshing
a stale entry does (the owner then takes it for a real machine, protects
it, and gossips that: see the gossip section); all this took %s. A client is an address asking for a VIP: the lab's 198.18.0.0/15 has
room for %d addresses, so past that each asks for more VIPs, and the table
holds an entry per VIP and address, as it would for as many addresses. The
kernel's neighbour tables are not touched: the requests are for the VIP,
which the hosts' kernels do not answer (arp_ignore), and the daemons answer
and re-point from raw sockets. RSS from /proc, the Go heap from the
daemon's metrics (`+"`go_memstats_heap_inuse_bytes`, `go_memstats_heap_sys_bytes`"+`),
before the clients and 3 s after; then again *at rest*, after the gossip
window (no client asked in it) and a garbage collection (the daemon's
`+"`/debug/pprof/heap?gc=1`"+` on its API socket, api.pprof): *heap live*
is that profile's total, what survived the collection; RSS is read right
after. Asking a daemon for its status or its metrics counts its clients
(at most once a second) by walking its client table a thousand at a time,
copying none of it; the bench does both before and after the gossip
window. *known* is the clients in `+"`arpshare status`"+`,
all VIPs; `+"`arpshare clients`"+` must list them all (not run past %d
clients). Goals: RSS at most 50 MB with 100,000 clients, at most 200 bytes a
client, and at most 250 MB with 1,000,000. The table alone, without the
process around it, is measured by `+"`go test -run XXX -bench ClientTableMemory -benchtime 1x ./arp`"+`
(about 67 bytes a client at 100,000, 64 at 1,000,000: 56 for the client,
the rest its index).

| host | known | listed | RSS before | RSS after | bytes a client | Go heap in use | Go heap from the OS | at rest: RSS | at rest: heap live |
|---|---|---|---|---|---|---|---|---|---|
%s

%s`, cmd, today(), len(p.vips)+1, p.maxClients(), p.n, p, tableRate, protectAfter, took, maxTable, maxTable, strings.Join(rows, "\n"), top)}, nil
}

// gossipWindow is how long gossipSection counts.
const gossipWindow = 90 * time.Second

// gossipSection counts what goes through each host's port for
// gossipWindow, by kind and direction, with the client table's share of
// the push-pulls from the daemons' own counters.
func gossipSection(l *lab.Lab, p tablePlan, filled time.Time) (section, error) {
	offset := time.Since(filled).Round(time.Second)
	say("gossip: counting each host's bytes out and in for %s", gossipWindow)
	var reads []func() (lab.PortBytes, error)
	for _, h := range l.Hosts {
		read, stop, err := h.CountPort()
		if err != nil {
			return section{}, err
		}
		defer stop()
		reads = append(reads, read)
	}
	s0, err := sampleHosts(l.Hosts)
	if err != nil {
		return section{}, err
	}
	start := time.Now()
	time.Sleep(gossipWindow)
	var counts []lab.PortBytes
	for _, read := range reads {
		b, err := read()
		if err != nil {
			return section{}, err
		}
		counts = append(counts, b)
	}
	secs := time.Since(start).Seconds()
	s1, err := sampleHosts(l.Hosts)
	if err != nil {
		return section{}, err
	}
	exchanges, err := pushPulls(l.Hosts, start, start.Add(gossipWindow))
	if err != nil {
		return section{}, err
	}
	kbs := func(b float64) string { return fmt.Sprintf("%.1f KB/s", b/secs/1000) }
	kind := func(c lab.Count) string {
		if c.Packets == 0 {
			return "0"
		}
		return fmt.Sprintf("%s (%.0f/s × %.0f B)", kbs(float64(c.Bytes)), float64(c.Packets)/secs, float64(c.Bytes)/float64(c.Packets))
	}
	var gossipRows, otherRows []string
	var sum accounting
	for i, h := range l.Hosts {
		b, d := counts[i], hostSample{tableOut: s1[i].tableOut - s0[i].tableOut, tableIn: s1[i].tableIn - s0[i].tableIn,
			statesOut: s1[i].statesOut - s0[i].statesOut, statesIn: s1[i].statesIn - s0[i].statesIn}
		sum.add(b.Sent, d)
		rounds, err := repointRounds(h, filled, start, start.Add(gossipWindow))
		if err != nil {
			return section{}, err
		}
		say("  %s: gossip sent %s: UDP %s, TCP %s (client table %s in %.0f states); received %s: UDP %s, TCP %s (client table %s in %.0f); %s push-pulls; ARP sent %s; all sent %s, received %s; heap %.1f MB; re-pointing rounds: %s",
			h.Name, kbs(float64(b.Sent.Gossip().Bytes)), kind(b.Sent.GossipUDP), kind(b.Sent.GossipTCP), kbs(d.tableOut), d.statesOut,
			kbs(float64(b.Received.Gossip().Bytes)), kind(b.Received.GossipUDP), kind(b.Received.GossipTCP), kbs(d.tableIn), d.statesIn,
			exchanges[h.Name], kind(b.Sent.ARP), kbs(float64(b.Sent.All.Bytes)), kbs(float64(b.Received.All.Bytes)), mb(s1[i].heap), rounds)
		gossipRows = append(gossipRows, fmt.Sprintf("| %s | **%s** | %s | %s | %s in %.0f | **%s** | %s | %s | %s in %.0f | %s |",
			h.Name, kbs(float64(b.Sent.Gossip().Bytes)), kind(b.Sent.GossipUDP), kind(b.Sent.GossipTCP), kbs(d.tableOut), d.statesOut,
			kbs(float64(b.Received.Gossip().Bytes)), kind(b.Received.GossipUDP), kind(b.Received.GossipTCP), kbs(d.tableIn), d.statesIn,
			exchanges[h.Name]))
		otherRows = append(otherRows, fmt.Sprintf("| %s | %s | %s | %s | %s |", h.Name, kind(b.Sent.ARP),
			kbs(float64(b.Sent.All.Bytes)), kbs(float64(b.Received.All.Bytes)), rounds))
	}
	return section{fmt.Sprintf("Gossip with %d clients", p.n), fmt.Sprintf(gossipText, p.n, today(), gossipWindow, offset,
		strings.Join(gossipRows, "\n"), sum.explain(len(l.Hosts), secs), config.DefaultRepointRate, config.DefaultReassertInterval,
		config.DefaultReassertRate, strings.Join(otherRows, "\n"))}, nil
}

// accounting sums what the hosts sent, to explain it per host.
type accounting struct {
	udp, tcp        lab.Count
	table, states   float64
	gossip, allSent int64
}

func (a *accounting) add(sent lab.PortCount, d hostSample) {
	a.udp.Packets += sent.GossipUDP.Packets
	a.udp.Bytes += sent.GossipUDP.Bytes
	a.tcp.Packets += sent.GossipTCP.Packets
	a.tcp.Bytes += sent.GossipTCP.Bytes
	a.table += d.tableOut
	a.states += d.statesOut
	a.gossip += sent.Gossip().Bytes
	a.allSent += sent.All.Bytes
}

// Sizes in a memberlist UDP frame besides its message: Ethernet, IPv4 and
// UDP headers; the label header (the cluster name, "lab", and 2 bytes);
// AES-GCM (version, nonce, tag); the CRC memberlist adds.
const udpHeaders, labelHeader, gcm, crc = 14 + 20 + 8, 2 + 3, 1 + 12 + 16, 5

// explain says where a host's gossip bytes a second go, on average over
// hosts hosts and secs seconds.
func (a accounting) explain(hosts int, secs float64) string {
	per := func(b float64) float64 { return b / float64(hosts) / secs }
	kb := func(b float64) string { return fmt.Sprintf("%.2f KB/s", per(b)/1000) }
	udpEach := float64(a.udp.Bytes) / float64(max(1, a.udp.Packets))
	tcpEach := float64(a.tcp.Bytes) / float64(max(1, a.states))
	tableEach := a.table / float64(max(1, a.states))
	msg := udpEach - udpHeaders - labelHeader - gcm - crc
	probes := 2 / config.DefaultProbeInterval.Seconds()
	extra := "That is all of them: no metadata broadcast, suspicion or user message went in the window (the cluster was steady); they would show as more frames."
	if more := per(float64(a.udp.Packets)) - probes; more > probes/20 {
		extra = fmt.Sprintf("%.1f frames a second more than the probes: memberlist's gossip (metadata broadcasts, suspicions, refutations), indirect probes, or user messages.", more)
	}
	return fmt.Sprintf(`**Where a host's gossip goes**, on average over the %d hosts: it sent
%s of gossip (%s of all it sent).

- UDP, %s: %.1f frames a second of %.0f bytes. A ping to one member
  every probe interval (%s by default: %.0f a second) and an ack to each
  ping of the other members (as many again): %.0f a second. Each frame is %d bytes
  of Ethernet, IPv4 and UDP headers, %d of memberlist's label header (the
  cluster name), %d of AES-GCM (version, nonce, tag), %d of CRC, and
  %.0f of the ping or ack itself (msgpack: sequence number, node name and
  address). %s
- TCP, %s: %.2f push-pull states a second, %.0f bytes each on the wire
  (encrypted, with TCP's headers and the acks of the states it received),
  carrying %.0f bytes of client table each (%s): a backlog of changes larger than the 512 KiB a state carries at
  most (maxChanges in arp/shared.go) fills every state, so this is the
  most a periodic push-pull sends whatever the table's size; memberlist's
  own part (its header and the members with their metadata, a few hundred
  bytes) is the rest. Memberlist's compression is off (see docs/design.md):
  real clients would compress less than the made-up ones anyway.
`, hosts, kb(float64(a.gossip)), kb(float64(a.allSent)), kb(float64(a.udp.Bytes)), per(float64(a.udp.Packets)), udpEach,
		config.DefaultProbeInterval, 1/config.DefaultProbeInterval.Seconds(), 2/config.DefaultProbeInterval.Seconds(), udpHeaders, labelHeader, gcm, crc, msg, extra,
		kb(float64(a.tcp.Bytes)), per(a.states), tcpEach, tableEach, kb(a.table))
}

const gossipText = `Written by ` + "`go run ./examples/lab -bench -modes table -table %d`" + ` on %s, right
after the memory measurement: the bytes each host sent and received through
its port over %s, starting %s after the last unicast request, as an
nftables table on the switch's side of each port counts them (Ethernet
frames, headers included), by kind. In this window each owner offers its
peers the clients that asked it again (now protected): every one of them
changed at once, the most gossip a table makes. Goal: gossip under 100 KB/s
per host with 1,000,000 clients.

- **UDP**: to or from the gossip port over UDP: memberlist's probes (a ping
  to one member every probe interval, and the acks to the members probing
  this host), with whatever memberlist gossip rides along (metadata
  broadcasts, suspicions; none while the cluster is steady), encrypted.
- **TCP**: over TCP: memberlist's push-pull exchanges, with their
  handshakes and acks; user messages (a host back from a counted death is
  told by one) go this way too. A push-pull carries memberlist's list of
  members and this host's client-table changes of the last 4 push-pull
  intervals, at most 512 KiB of them (17 bytes a client) each way; a join
  would carry the whole table. Memberlist encrypts it (its compression is off).
- **client table**: the part of the push-pulls that is client table,
  as the daemon hands it to memberlist, from the daemon's
  ` + "`arpshare_gossip_table_bytes_total`" + `, and how many such states went.
- **push-pulls**: the exchanges the host took part in, begun by it or by a
  peer (from memberlist's log lines; a join is named).

| host | gossip sent | UDP | TCP | client table sent | gossip received | UDP | TCP | client table received | push-pulls |
|---|---|---|---|---|---|---|---|---|---|
%s

%s
Not gossip, in the same window: **ARP**, ARP and NDP the host sent, here
the unicast requests an owner sends its clients to re-point them, 60 bytes
each (see docs/design.md, Re-pointing): each host re-points the clients it
owns, a third of them here, one request each, 2 s after its view of the
VIP's hosts changes ("settle"; twice, "×2", when the change was this host
refuting a suspicion), at node.repoint_rate (%d packets a second by
default), and once more every %s (node.reassert_interval, "periodic"),
paced apart at node.reassert_rate (%d packets a second by default, so a
periodic round of a large table lasts far longer than the interval, and no
new one begins while it runs). The made-up clients never answer. The last
column lists, from each host's log, the rounds begun since the last unicast
request, each with its clients and its start in seconds from the window's
(one begun before may still be sending).

| host | ARP sent | all sent | all received | re-pointing rounds (clients, start) |
|---|---|---|---|---|
%s
`

// restSamples returns each daemon's RSS now and its live heap, the total
// of its "rest" heap profile (collected first).
func restSamples(l *lab.Lab, dir string) ([]hostSample, error) {
	var out []hostSample
	for _, h := range l.Hosts {
		rss, err := h.RSS()
		if err != nil {
			return nil, err
		}
		top, err := exec.Command("go", "tool", "pprof", "-sample_index=inuse_space", "-top", "-nodecount=1",
			filepath.Join(dir, h.Name+"-rest.heap.pb.gz")).Output()
		if err != nil {
			return nil, fmt.Errorf("go tool pprof: %w", err)
		}
		m := regexp.MustCompile(`of ([0-9.]+)([kMG]?B) total`).FindStringSubmatch(string(top))
		if m == nil {
			return nil, fmt.Errorf("%s: no total in go tool pprof's output: %s", h.Name, top)
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		unit := map[string]float64{"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[m[2]]
		out = append(out, hostSample{rss: rss, heap: int64(v * unit)})
	}
	return out, nil
}

// saveProfiles fetches every daemon's heap profile (profile: "heap", or
// "heap?gc=1" to collect garbage first) and writes it into dir, as
// <host>-<when>.heap.pb.gz, if dir is set.
func saveProfiles(l *lab.Lab, dir, when, profile string) error {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	for _, h := range l.Hosts {
		b, err := h.Profile(profile)
		if err != nil {
			return err
		}
		if dir == "" {
			continue
		}
		path := filepath.Join(dir, h.Name+"-"+when+".heap.pb.gz")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return err
		}
		say("  %s: heap profile in %s", h.Name, path)
	}
	return nil
}

// heapTops returns, for the host whose RSS was largest once the clients
// were made up, what held its heap then and at rest: the functions that
// allocated it, with their callers (`go tool pprof -peek` of those at the
// top of `-top`).
func heapTops(l *lab.Lab, after []hostSample, dir string) (string, error) {
	big := 0
	for i := range after {
		if after[i].rss > after[big].rss {
			big = i
		}
	}
	h := l.Hosts[big].Name
	var b strings.Builder
	fmt.Fprintf(&b, "What held the heap of %s, the largest, from its heap profiles: the functions that allocated it\nand their callers (`go tool pprof -sample_index=inuse_space -peek`; `-profiles DIR` keeps the profiles).\n", h)
	for _, when := range []struct{ name, what string }{{"filled", "3 s after the clients were made up (what the last collection left, and garbage since)"}, {"rest", "at rest, collected"}} {
		path := filepath.Join(dir, h+"-"+when.name+".heap.pb.gz")
		out, err := exec.Command("go", "tool", "pprof", "-sample_index=inuse_space", "-top", "-nodecount=5", path).Output()
		if err != nil {
			return "", fmt.Errorf("go tool pprof: %w", err)
		}
		var funcs []string
		rows := false
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if rows && len(f) >= 6 && f[0] != "0" {
				funcs = append(funcs, regexp.QuoteMeta(strings.Join(f[5:], " "))+"$")
			}
			rows = rows || strings.Contains(line, "flat%")
		}
		peek, err := exec.Command("go", "tool", "pprof", "-sample_index=inuse_space", "-peek", strings.Join(funcs, "|"), path).Output()
		if err != nil {
			return "", fmt.Errorf("go tool pprof: %w", err)
		}
		fmt.Fprintf(&b, "\n%s:\n\n```\n", when.what)
		rows = false
		for _, line := range strings.Split(string(peek), "\n") {
			if strings.HasPrefix(line, "Showing nodes") {
				rows = true
			}
			if rows && strings.TrimSpace(line) != "" {
				fmt.Fprintln(&b, strings.TrimRight(line, " \t"))
			}
		}
		b.WriteString("```\n")
	}
	return b.String(), nil
}
