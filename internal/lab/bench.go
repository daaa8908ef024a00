package lab

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/mdlayher/packet"
)

// ARPRun is what an ARPBench saw.
type ARPRun struct {
	Sent      int
	Answered  int
	Latencies []time.Duration // sorted
}

// Quantile returns the q quantile of the latencies (0 if there are none).
func (r ARPRun) Quantile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	return r.Latencies[min(len(r.Latencies)-1, int(q*float64(len(r.Latencies))))]
}

// Loss is the share of requests left unanswered.
func (r ARPRun) Loss() float64 {
	if r.Sent == 0 {
		return 0
	}
	return 1 - float64(r.Answered)/float64(r.Sent)
}

// BenchSender returns the address and MAC of fake sender i of a bench:
// addresses from first on (IPv4 or IPv6), MACs 02:f2:xx:xx:xx:xx.
func BenchSender(first netip.Addr, i int) (netip.Addr, net.HardwareAddr) {
	a := first.As16()
	n := binary.BigEndian.Uint32(a[12:]) + uint32(i)
	binary.BigEndian.PutUint32(a[12:], n)
	ip := netip.AddrFrom16(a)
	if first.Is4() {
		ip = ip.Unmap()
	}
	return ip, net.HardwareAddr{0x02, 0xf2, 0, byte(i >> 16), byte(i >> 8), byte(i)}
}

// ARPLoad is the load an ARPBench offers.
type ARPLoad struct {
	Target  netip.Addr // the address asked for
	First   netip.Addr // the first fake sender's address
	Senders int        // fake senders, asking in turn
	Rate    int        // requests a second
	For     time.Duration
	Count   int // stop after this many requests; 0: no limit
	// To, if set, gives the Ethernet destination of sender i's requests,
	// as a client refreshing its entry sends them; nil: broadcast.
	To func(i int) net.HardwareAddr
}

// ARPBench sends broadcast ARP requests out of the client's port as load
// says (fake senders: see BenchSender), and times each answer from the send
// to its arrival, both in this process: the same overhead for whoever
// answers. A request still unanswered when its sender asks again counts as
// lost.
func (c *Client) ARPBench(ctx context.Context, load ARPLoad) (ARPRun, error) {
	var run ARPRun
	err := inNS(c.NS, func() error {
		conn, err := listenFrames(0x0806)
		if err != nil {
			return err
		}
		frames := make([][]byte, load.Senders)
		for i := range frames {
			ip, mac := BenchSender(load.First, i)
			frames[i] = arpRequest(mac, ip, load.Target)
		}
		t4 := load.Target.As4()
		answer := func(b []byte) (int, bool) {
			if len(b) < 42 || binary.BigEndian.Uint16(b[20:]) != 2 || [4]byte(b[28:32]) != t4 || b[32] != 0x02 || b[33] != 0xf2 {
				return 0, false
			}
			return int(b[35])<<16 | int(b[36])<<8 | int(b[37]), true
		}
		bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
		dst := func(int) net.HardwareAddr { return bcast }
		if load.To != nil {
			dst = load.To
			for i, f := range frames {
				copy(f[0:6], dst(i))
			}
		}
		run, err = benchRun(ctx, conn, frames, dst, answer, load)
		return err
	})
	return run, err
}

// NDPBench is ARPBench for IPv6: Neighbor Solicitations for load.Target
// (to its solicited-node group, hop limit 255, each with its sender's
// link-layer address), timed to the advertisement that answers each.
// load.First is an IPv6 address; load.To is not used.
func (c *Client) NDPBench(ctx context.Context, load ARPLoad) (ARPRun, error) {
	var run ARPRun
	err := inNS(c.NS, func() error {
		conn, err := listenFrames(0x86dd)
		if err != nil {
			return err
		}
		frames := make([][]byte, load.Senders)
		for i := range frames {
			ip, mac := BenchSender(load.First, i)
			frames[i] = solicitation(mac, ip, load.Target)
		}
		target := load.Target.As16()
		// An advertisement (ICMPv6 type 136) of the target, to a sender.
		answer := func(b []byte) (int, bool) {
			if len(b) < 78 || b[0] != 0x02 || b[1] != 0xf2 || binary.BigEndian.Uint16(b[12:]) != 0x86dd ||
				b[20] != 58 || b[54] != 136 || [16]byte(b[62:78]) != target {
				return 0, false
			}
			return int(b[3])<<16 | int(b[4])<<8 | int(b[5]), true
		}
		group := net.HardwareAddr(frames[0][0:6])
		run, err = benchRun(ctx, conn, frames, func(int) net.HardwareAddr { return group }, answer, load)
		return err
	})
	return run, err
}

// listenFrames opens a packet socket on eth0 for one EtherType, without
// arp.Listen's filter: the answers go to the made-up senders' MACs, which
// the kernel marks as another host's.
func listenFrames(etherType uint16) (packetConn, error) {
	ifi, err := net.InterfaceByName("eth0")
	if err != nil {
		return packetConn{}, err
	}
	pc, err := packet.Listen(ifi, packet.Raw, int(etherType), nil)
	if err != nil {
		return packetConn{}, fmt.Errorf("open packet socket: %w", err)
	}
	return packetConn{pc}, nil
}

// packetConn is a packet socket as a benchConn.
type packetConn struct{ c *packet.Conn }

func (p packetConn) ReadFrame(b []byte) (int, error) {
	n, _, err := p.c.ReadFrom(b)
	return n, err
}

func (p packetConn) WriteFrame(b []byte, dst net.HardwareAddr) error {
	_, err := p.c.WriteTo(b, &packet.Addr{HardwareAddr: dst})
	return err
}

func (p packetConn) Close() error { return p.c.Close() }

// solicitation is a Neighbor Solicitation for target from sender (at
// senderMAC) to target's solicited-node group, in an Ethernet frame.
func solicitation(senderMAC net.HardwareAddr, sender, target netip.Addr) []byte {
	t := target.As16()
	group := [16]byte{0: 0xff, 1: 0x02, 11: 0x01, 12: 0xff, 13: t[13], 14: t[14], 15: t[15]}
	b := append([]byte{0x33, 0x33, 0xff, t[13], t[14], t[15]}, senderMAC...)
	b = append(b, 0x86, 0xdd, 0x60, 0, 0, 0, 0, 32, 58, 255)
	b = append(b, sender.AsSlice()...)
	b = append(b, group[:]...)
	b = append(b, 135, 0, 0, 0, 0, 0, 0, 0)
	b = append(b, t[:]...)
	b = append(append(b, 1, 1), senderMAC...)
	// The checksum over the pseudo-header (RFC 8200 8.1) and the message.
	var sum uint32
	for i := 22; i < 54; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	sum += 32 + 58
	for i := 54; i < 86; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(b[56:], ^uint16(sum))
	return b
}

// benchConn is a socket of whole Ethernet frames.
type benchConn interface {
	ReadFrame(b []byte) (int, error)
	WriteFrame(b []byte, dst net.HardwareAddr) error
	Close() error
}

// benchRun sends frames[i % len] at load's rate to dst(i) on conn, and
// times the answers that answer picks out (it returns the sender's index),
// until load ends; it closes conn.
func benchRun(ctx context.Context, conn benchConn, frames [][]byte, dst func(int) net.HardwareAddr, answer func([]byte) (int, bool), load ARPLoad) (ARPRun, error) {
	var run ARPRun
	defer conn.Close()
	var (
		mu      sync.Mutex
		sentAt  = make([]time.Time, len(frames)) // zero: nothing pending
		answers []time.Duration
	)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		b := make([]byte, 1500)
		for {
			n, err := conn.ReadFrame(b)
			now := time.Now()
			if err != nil {
				return
			}
			i, ok := answer(b[:n])
			if !ok || i >= len(frames) {
				continue
			}
			mu.Lock()
			if !sentAt[i].IsZero() {
				answers = append(answers, now.Sub(sentAt[i]))
				sentAt[i] = time.Time{}
			}
			mu.Unlock()
		}
	}()
	start := time.Now()
	for time.Since(start) < load.For && ctx.Err() == nil && (load.Count == 0 || run.Sent < load.Count) {
		// Pace by the clock, not by a ticker: a late tick sends its
		// backlog at once.
		due := int(time.Since(start).Seconds() * float64(load.Rate))
		if load.Count > 0 {
			due = min(due, load.Count)
		}
		for run.Sent < due {
			i := run.Sent % len(frames)
			mu.Lock()
			sentAt[i] = time.Now()
			mu.Unlock()
			if err := conn.WriteFrame(frames[i], dst(i)); err != nil {
				return run, fmt.Errorf("send a request: %w", err)
			}
			run.Sent++
		}
		time.Sleep(200 * time.Microsecond)
	}
	time.Sleep(100 * time.Millisecond) // the last answers
	conn.Close()
	<-readDone
	run.Answered = len(answers)
	run.Latencies = answers
	slices.Sort(run.Latencies)
	return run, nil
}

// CPUTime returns the CPU time (user and system) the host's daemon used so
// far.
func (h *Host) CPUTime() (time.Duration, error) {
	pid := h.PID()
	if pid == 0 {
		return 0, fmt.Errorf("%s: daemon not running", h.Name)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command may hold spaces: the fields start after its ")".
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks, nil
}

// RSS returns the resident memory of the host's daemon, in bytes.
func (h *Host) RSS() (int64, error) {
	pid := h.PID()
	if pid == 0 {
		return 0, fmt.Errorf("%s: daemon not running", h.Name)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("%s: no VmRSS", h.Name)
}

// Count is packets and their bytes.
type Count struct{ Packets, Bytes int64 }

// PortCount is one direction of a host's switch port, by kind, in bytes of
// Ethernet frames (headers included, as the port's own counter has them;
// a TCP segment the kernel has yet to split counts once, as there).
type PortCount struct {
	GossipUDP Count // to or from the gossip port over UDP: memberlist's probes, acks and gossip
	GossipTCP Count // over TCP: memberlist's push-pulls (their handshakes and acks included) and reliable messages
	ARP       Count // ARP and NDP (neighbour solicitations and advertisements): answers, re-pointing requests
	All       Count // everything, these included
}

// Gossip is both gossip kinds together.
func (p PortCount) Gossip() Count {
	return Count{p.GossipUDP.Packets + p.GossipTCP.Packets, p.GossipUDP.Bytes + p.GossipTCP.Bytes}
}

// PortBytes is what went through a host's switch port.
type PortBytes struct {
	Sent     PortCount // by the host
	Received PortCount // by the host: unicast to it, and every broadcast
}

// portKinds are CountPort's counters: a prefix for the direction (out: the
// host sent it, in: the host received it) and one of these.
var portKinds = []string{"udp", "tcp", "neigh", "frames"}

// CountPort counts, by kind, the frames the host sends out of its port and
// receives from it from now on, with an nftables table on the switch's
// side of the port (in the switch's namespace): its ingress hook sees what
// the host sent, its egress hook what the host receives. read returns the
// counts so far; stop removes the table (it goes with the lab's namespaces
// anyway).
func (h *Host) CountPort() (read func() (PortBytes, error), stop func(), err error) {
	table := "arpshare_port_" + h.Name
	var rules strings.Builder
	fmt.Fprintf(&rules, "table netdev %s {\n", table)
	for _, dir := range []string{"out", "in"} {
		for _, k := range portKinds {
			fmt.Fprintf(&rules, "\tcounter %s_%s {}\n", dir, k)
		}
		hook := map[string]string{"out": "ingress", "in": "egress"}[dir]
		fmt.Fprintf(&rules, `	chain %[1]s {
		type filter hook %[2]s device %[3]q priority 0; policy accept;
		counter name "%[1]s_frames"
		ether type arp counter name "%[1]s_neigh" accept
		icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } counter name "%[1]s_neigh" accept
		udp sport 7946 counter name "%[1]s_udp" accept
		udp dport 7946 counter name "%[1]s_udp" accept
		tcp sport 7946 counter name "%[1]s_tcp" accept
		tcp dport 7946 counter name "%[1]s_tcp" accept
	}
`, dir, hook, h.Name)
	}
	rules.WriteString("}\n")
	nft := func(stdin string, args ...string) ([]byte, error) {
		cmd := exec.Command("ip", append([]string{"netns", "exec", h.lab.switchNS, "nft"}, args...)...)
		if stdin != "" {
			cmd.Stdin = strings.NewReader(stdin)
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("%s: count port: nft %s: %w: %s", h.Name, strings.Join(args, " "), err, out)
		}
		return out, nil
	}
	if _, err := nft(rules.String(), "-f", "-"); err != nil {
		return nil, nil, err
	}
	var once sync.Once
	stop = func() { once.Do(func() { nft("", "delete", "table", "netdev", table) }) }
	read = func() (PortBytes, error) {
		out, err := nft("", "-j", "list", "counters", "table", "netdev", table)
		if err != nil {
			return PortBytes{}, err
		}
		return portBytes(out)
	}
	return read, stop, nil
}

// portBytes reads CountPort's counters from `nft -j list counters`. The
// ingress hook sees frames without their Ethernet header: it is added back;
// the egress hook sees it.
func portBytes(j []byte) (PortBytes, error) {
	var list struct {
		Nftables []struct {
			Counter *struct {
				Name    string `json:"name"`
				Packets int64  `json:"packets"`
				Bytes   int64  `json:"bytes"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(j, &list); err != nil {
		return PortBytes{}, fmt.Errorf("count port: nft output: %w", err)
	}
	var b PortBytes
	found := 0
	for _, o := range list.Nftables {
		c := o.Counter
		if c == nil {
			continue
		}
		dir, kind, _ := strings.Cut(c.Name, "_")
		pc, n := &b.Sent, Count{c.Packets, c.Bytes + 14*c.Packets}
		if dir == "in" {
			pc, n = &b.Received, Count{c.Packets, c.Bytes}
		} else if dir != "out" {
			continue
		}
		switch kind {
		case "udp":
			pc.GossipUDP = n
		case "tcp":
			pc.GossipTCP = n
		case "neigh":
			pc.ARP = n
		case "frames":
			pc.All = n
		default:
			continue
		}
		found++
	}
	if want := 2 * len(portKinds); found != want {
		return PortBytes{}, fmt.Errorf("count port: nft listed %d of its %d counters", found, want)
	}
	return b, nil
}

// KernelCPU is what the machine's CPUs did so far, from /proc/stat: all of
// it, whoever it was for (every namespace, every process).
type KernelCPU struct {
	Busy    time.Duration // everything but idle and iowait
	SoftIRQ time.Duration // softirq: where tc programs and packet delivery run
}

// MachineCPU reads /proc/stat.
func MachineCPU() (KernelCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return KernelCPU{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return KernelCPU{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var ticks []int64
	for _, s := range f[1:] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return KernelCPU{}, fmt.Errorf("/proc/stat: %w", err)
		}
		ticks = append(ticks, n)
	}
	var busy int64
	for i, n := range ticks[:min(len(ticks), 8)] { // user nice system idle iowait irq softirq steal
		if i != 3 && i != 4 {
			busy += n
		}
	}
	const ticksPerSecond = 100 // USER_HZ
	tick := time.Second / ticksPerSecond
	return KernelCPU{Busy: time.Duration(busy) * tick, SoftIRQ: time.Duration(ticks[6]) * tick}, nil
}

// FastPathRuns returns the run time and run count the kernel has counted
// for every loaded fast path program of that name (fastpath.ProgramName or
// NDPProgramName; one per serving interface, in any namespace), while
// ebpf.EnableStats is in force.
func FastPathRuns(name string) (time.Duration, uint64, error) {
	var (
		total time.Duration
		runs  uint64
		id    ebpf.ProgramID
	)
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return total, runs, nil
		}
		if err != nil {
			return 0, 0, fmt.Errorf("list BPF programs: %w", err)
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // gone meanwhile
		}
		info, err := p.Info()
		if err == nil && info.Name == name {
			if st, err := p.Stats(); err == nil {
				total += st.Runtime
				runs += st.RunCount
			}
		}
		p.Close()
	}
}
