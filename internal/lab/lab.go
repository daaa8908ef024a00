package lab

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/arpshare/arpshare/internal/api"
)

// Addresses: everything lives in 198.18.0.0/24, inside the benchmarking range
// 198.18.0.0/15 that is never routed on real networks: hosts from .11 (the
// 51st host on from .202), clients from .101, VIPs at .200 and .201.
var (
	VIP     = netip.MustParseAddr("198.18.0.200")
	VIP6    = netip.MustParseAddr("fd00::200") // with HostConfig.IPv6VIP
	subnet6 = 64
	hostIP6 = func(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("fd00::%d", hostNum(i))) }
	cliIP6  = func(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("fd00::%d", 101+i)) }
	subnet  = 24
	port    = 80 // the hosts' little TCP service on the VIP
	hostIP  = func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(hostNum(i))}) }
	cliIP   = func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(101 + i)}) }
	maxHost = 50 + 53
)

// gossipIP is host i's address on the gossip network (Options.GossipNet),
// in 198.19.0.0/24: the benchmarking range still.
var gossipIP = func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 19, 0, byte(hostNum(i))}) }

// hostNum is the last number of host i's addresses: 11 to 60, then 202 to
// 254.
func hostNum(i int) int {
	if i < 50 {
		return 11 + i
	}
	return 202 + i - 50
}

// Options describe a lab.
type Options struct {
	Hosts   int    // hosts running arpshare, at most 103
	Clients int    // clients, at most 99
	Binary  string // the arpshare binary
	// Dir holds configs, keys, sockets and logs; it is removed on Close.
	// Empty means a new temporary directory.
	Dir string
	// Config is every host's config to start with.
	Config HostConfig
	// GossipNet gives gossip a network of its own: each host's eth1, on a
	// second bridge (br1 in the switch's namespace), at 198.19.0.x; the
	// VIP stays on eth0, where the clients are.
	GossipNet bool
	// User, if not 0, runs the daemons as this uid with only CAP_NET_RAW,
	// CAP_NET_ADMIN and CAP_BPF, as the systemd unit does. It needs Dir
	// empty.
	User int
}

// HostConfig is what varies between the hosts' configs.
type HostConfig struct {
	Name    string // node.name; "": the host's own name
	KeyFile string // "": the lab's key
	Cluster string // "": "lab"
	Weight  int    // 0: not set
	Mode    string // "": not set (hash)
	Expect  int    // 0: not set
	// Check adds a TCP health check on the host's service, fast for tests:
	// every 200ms, rise 2, fall 3.
	Check bool
	// Metrics serves Prometheus metrics on MetricsAddr in the host.
	Metrics bool
	// Pprof serves Go's pprof on the API socket (api.pprof): see
	// Host.Profile.
	Pprof bool
	// SecondVIP adds the VIP "db" at SecondVIP.
	SecondVIP bool
	// IPv6VIP adds the IPv6 VIP "web6" at VIP6.
	IPv6VIP bool
	// TableVIPs adds that many more IPv4 VIPs, "t1" on at TableVIP(1) on
	// (at most MaxTableVIPs), for a table of more clients than the lab has
	// addresses: each address is a client of every VIP it asks for.
	TableVIPs int
	// MaxClients sets node.max_clients; 0: not set.
	MaxClients int
	// Broken writes a config that does not parse.
	Broken bool
	// Handover, if set, is the body of the [handover] table.
	Handover string
	// Gossip, if set, is added to the [gossip] table (timings, say).
	Gossip string
	// FastPath sets node.fast_path; "": not set (auto).
	FastPath string
	// Peers is how many of the lab's hosts gossip.peers names, the first
	// ones; 0: three.
	Peers int
	// ProposeRouters sets node.propose_routers.
	ProposeRouters bool
	// Routers sets the VIP "web"'s vip.routers, Routers6 those of
	// "web6" (with IPv6VIP).
	Routers, Routers6 []netip.Addr
}

// SecondVIP is the address of the optional second VIP, "db".
var SecondVIP = netip.MustParseAddr("198.18.0.201")

// MaxTableVIPs is how many VIPs HostConfig.TableVIPs adds at most.
const MaxTableVIPs = 9

// TableVIP returns the address of the VIP "t<i>" of HostConfig.TableVIPs,
// 1 ≤ i ≤ MaxTableVIPs: 198.18.0.2 on, below the hosts' addresses.
func TableVIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(1 + i)}) }

// MetricsAddr is where a host with HostConfig.Metrics serves metrics,
// inside its namespace.
const MetricsAddr = "127.0.0.1:9947"

// Lab is a running lab. Close removes everything it made.
type Lab struct {
	Suffix  string
	Hosts   []*Host
	Clients []*Client
	Dir     string
	KeyFile string

	binary   string
	config   HostConfig
	user     int
	gossip   bool // GossipNet
	switchNS string
	nextHost int
	ownDir   bool
	mu       sync.Mutex
	cleanups []func()
}

// Host is a machine running arpshare and a TCP service that answers with its
// name.
type Host struct {
	Name  string
	NS    string
	Addr  netip.Addr
	Addr6 netip.Addr
	// Gossip is the address gossip binds to: Addr, or its eth1 address
	// with GossipNet.
	Gossip netip.Addr
	Config string // path of its config file
	Socket string
	Log    string // path of its daemon's log
	// Notify is the systemd notify socket the daemon reports to.
	Notify string

	// Journal makes the daemon's log the "journal": its stderr is the
	// stream $JOURNAL_STREAM names, as under systemd. Set before Start.
	Journal bool
	// Strace, if set, is where `strace -f -c` writes a summary of the
	// system calls the daemon made, when it exits. Set before Start.
	Strace string
	// Binary, if set, is the arpshare binary this host runs, for its
	// daemon and its commands (another release, in a mixed cluster);
	// empty: the lab's. Set while the daemon is stopped. With Options.User
	// the user must be able to run it.
	Binary string

	lab       *Lab
	throttled string // its cgroup while Throttle holds it
	notes     []string
	service   net.Listener
	mu        sync.Mutex
	cmd       *exec.Cmd
	exited    chan struct{}
	err       error
}

// Client is a machine whose kernel talks to the VIP.
type Client struct {
	Name  string
	NS    string
	Addr  netip.Addr
	Addr6 netip.Addr
}

// New builds a lab. On error, whatever was made is removed.
func New(opts Options) (l *Lab, err error) {
	if opts.Hosts > maxHost || opts.Clients > 99 {
		return nil, fmt.Errorf("lab: at most %d hosts and 99 clients", maxHost)
	}
	suffix := make([]byte, 3)
	rand.Read(suffix)
	l = &Lab{Suffix: hex.EncodeToString(suffix), binary: opts.Binary, Dir: opts.Dir, config: opts.Config, user: opts.User, gossip: opts.GossipNet}
	if l.user != 0 && l.Dir != "" {
		return nil, fmt.Errorf("lab: a User needs a lab-made Dir")
	}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	release, err := raiseNeighbourLimits(l.Suffix, neighEntries(opts.Hosts, opts.Clients))
	if err != nil {
		return nil, err
	}
	l.onClose(func() { // the first added, so the last to run
		if err := release(); err != nil {
			fmt.Fprintln(os.Stderr, "lab:", err)
		}
	})
	if l.Dir == "" {
		if l.Dir, err = os.MkdirTemp("", "arpshare-lab-"+l.Suffix+"-"); err != nil {
			return nil, err
		}
		l.ownDir = true
	}
	l.KeyFile = filepath.Join(l.Dir, "gossip.key")
	if err := WriteKey(l.KeyFile); err != nil {
		return nil, err
	}
	if err := l.own(l.Dir, l.KeyFile); err != nil {
		return nil, err
	}
	if l.user != 0 {
		// The user must reach the binary: keep a copy in the lab's folder.
		b, err := os.ReadFile(l.binary)
		if err != nil {
			return nil, err
		}
		l.binary = filepath.Join(l.Dir, "arpshare")
		if err := os.WriteFile(l.binary, b, 0o755); err != nil {
			return nil, err
		}
	}

	l.switchNS = "arpshare-" + l.Suffix + "-sw"
	if err := l.addNS(l.switchNS); err != nil {
		return nil, err
	}
	// Without multicast snooping the bridge floods Neighbor Solicitations
	// like a plain switch, whoever has joined which group.
	if err := ip("-n", l.switchNS, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"); err != nil {
		return nil, err
	}
	if err := ip("-n", l.switchNS, "link", "set", "br0", "up"); err != nil {
		return nil, err
	}
	if l.gossip {
		if err := ip("-n", l.switchNS, "link", "add", "br1", "type", "bridge"); err != nil {
			return nil, err
		}
		if err := ip("-n", l.switchNS, "link", "set", "br1", "up"); err != nil {
			return nil, err
		}
	}
	for range opts.Hosts {
		if _, err := l.AddHost(); err != nil {
			return nil, err
		}
	}
	for i := range opts.Clients {
		c := &Client{Name: fmt.Sprintf("c%02d", i+1), Addr: cliIP(i), Addr6: cliIP6(i)}
		c.NS = "arpshare-" + l.Suffix + "-" + c.Name
		if err := l.plug(c.NS, c.Name, c.Addr, c.Addr6); err != nil {
			return nil, err
		}
		l.Clients = append(l.Clients, c)
	}
	return l, nil
}

// WriteKey writes a new random gossip key to path.
func WriteKey(path string) error {
	key := make([]byte, 32)
	rand.Read(key)
	return os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600)
}

// own gives the daemons' user the lab's files (the folder, keys, configs).
func (l *Lab) own(paths ...string) error {
	if l.user == 0 {
		return nil
	}
	for _, p := range paths {
		if err := os.Chown(p, l.user, l.user); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) addNS(name string) error {
	if err := ip("netns", "add", name); err != nil {
		return err
	}
	l.onClose(func() { ip("netns", "del", name) })
	return ip("-n", name, "link", "set", "lo", "up")
}

// plug makes namespace ns with an eth0 at addr and addr6, cabled to the
// switch.
func (l *Lab) plug(ns, port string, addr, addr6 netip.Addr) error {
	if err := l.addNS(ns); err != nil {
		return err
	}
	// Addresses usable at once (no duplicate address detection in the
	// lab), and kept while the link is down, as a real host's network
	// configuration puts them back when it comes up.
	if out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-q", "-w",
		"net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0",
		"net.ipv6.conf.default.keep_addr_on_down=1", "net.ipv6.conf.all.keep_addr_on_down=1").CombinedOutput(); err != nil {
		return fmt.Errorf("%s: sysctl: %w: %s", ns, err, out)
	}
	steps := [][]string{
		{"-n", l.switchNS, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"-n", l.switchNS, "link", "set", port, "master", "br0", "up"},
		{"-n", ns, "addr", "add", netip.PrefixFrom(addr, subnet).String(), "dev", "eth0"},
		{"-n", ns, "addr", "add", netip.PrefixFrom(addr6, subnet6).String(), "dev", "eth0", "nodad"},
		{"-n", ns, "link", "set", "eth0", "up"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) onClose(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cleanups = append(l.cleanups, f)
}

// AddHost adds a host with a config for the lab's cluster. It is not started.
func (l *Lab) AddHost() (*Host, error) {
	l.mu.Lock()
	i := l.nextHost
	l.nextHost++
	l.mu.Unlock()
	h := &Host{Name: fmt.Sprintf("h%d", i+1), Addr: hostIP(i), Addr6: hostIP6(i), Gossip: hostIP(i), lab: l}
	h.NS = "arpshare-" + l.Suffix + "-" + h.Name
	h.Config = filepath.Join(l.Dir, h.Name+".toml")
	h.Socket = filepath.Join(l.Dir, h.Name+".sock")
	h.Log = filepath.Join(l.Dir, h.Name+".log")
	h.Notify = filepath.Join(l.Dir, h.Name+".notify")
	if err := h.listenNotify(); err != nil {
		return nil, err
	}
	if err := l.plug(h.NS, h.Name, h.Addr, h.Addr6); err != nil {
		return nil, err
	}
	if l.gossip {
		h.Gossip = gossipIP(i)
		port := h.Name + "g"
		for _, s := range [][]string{
			{"-n", l.switchNS, "link", "add", port, "type", "veth", "peer", "name", "eth1", "netns", h.NS},
			{"-n", l.switchNS, "link", "set", port, "master", "br1", "up"},
			{"-n", h.NS, "addr", "add", netip.PrefixFrom(h.Gossip, subnet).String(), "dev", "eth1"},
			{"-n", h.NS, "link", "set", "eth1", "up"},
		} {
			if err := ip(s...); err != nil {
				return nil, err
			}
		}
	}
	if err := h.WriteConfig(l.config); err != nil {
		return nil, err
	}
	if err := h.StartService(); err != nil {
		return nil, err
	}
	l.onClose(h.StopService)
	l.mu.Lock()
	l.Hosts = append(l.Hosts, h)
	l.mu.Unlock()
	l.onClose(func() { h.Kill() })
	return h, nil
}

// WriteConfig writes the host's config; its peers are the lab's first three
// hosts, or hc.Peers. A running daemon keeps its old config until restarted.
func (h *Host) WriteConfig(hc HostConfig) error {
	if hc.KeyFile == "" {
		hc.KeyFile = h.lab.KeyFile
	}
	if hc.Cluster == "" {
		hc.Cluster = "lab"
	}
	var peers []string
	if hc.Peers == 0 {
		hc.Peers = 3
	}
	for i := range hc.Peers {
		addr := hostIP(i)
		if h.lab.gossip {
			addr = gossipIP(i)
		}
		peers = append(peers, fmt.Sprintf("%q", addr.String()+":7946"))
	}
	if hc.Name == "" {
		hc.Name = h.Name
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[node]\nname = %q\nstate_dir = %q\n", hc.Name, filepath.Join(h.lab.Dir, h.Name+".state"))
	if hc.Weight != 0 {
		fmt.Fprintf(&b, "weight = %d\n", hc.Weight)
	}
	if hc.MaxClients != 0 {
		fmt.Fprintf(&b, "max_clients = %d\n", hc.MaxClients)
	}
	if hc.FastPath != "" {
		fmt.Fprintf(&b, "fast_path = %q\n", hc.FastPath)
	}
	if hc.ProposeRouters {
		b.WriteString("propose_routers = true\n")
	}
	fmt.Fprintf(&b, "\n[gossip]\nbind = \"%s:7946\"\npeers = [%s]\nkey_file = %q\ncluster = %q\n",
		h.Gossip, strings.Join(peers, ", "), hc.KeyFile, hc.Cluster)
	if hc.Expect != 0 {
		fmt.Fprintf(&b, "expect = %d\n", hc.Expect)
	}
	if hc.Gossip != "" {
		fmt.Fprintf(&b, "%s\n", hc.Gossip)
	}
	fmt.Fprintf(&b, "\n[[vip]]\nname = \"web\"\naddress = %q\ninterface = \"eth0\"\n", VIP)
	if hc.Mode != "" {
		fmt.Fprintf(&b, "mode = %q\n", hc.Mode)
	}
	writeRouters(&b, hc.Routers)
	if hc.Check {
		fmt.Fprintf(&b, "[vip.check]\ntcp = \"127.0.0.1:%d\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nfall = 3\n", port)
	}
	if hc.IPv6VIP {
		fmt.Fprintf(&b, "\n[[vip]]\nname = \"web6\"\naddress = %q\ninterface = \"eth0\"\n", VIP6)
		if hc.Mode != "" {
			fmt.Fprintf(&b, "mode = %q\n", hc.Mode)
		}
		writeRouters(&b, hc.Routers6)
	}
	if hc.SecondVIP {
		fmt.Fprintf(&b, "\n[[vip]]\nname = \"db\"\naddress = %q\ninterface = \"eth0\"\n", SecondVIP)
	}
	if err := writeTableVIPs(&b, hc.TableVIPs); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	fmt.Fprintf(&b, "\n[api]\nsocket = %q\n", h.Socket)
	if hc.Metrics {
		fmt.Fprintf(&b, "metrics = %q\n", MetricsAddr)
	}
	if hc.Pprof {
		b.WriteString("pprof = true\n")
	}
	if hc.Handover != "" {
		fmt.Fprintf(&b, "\n[handover]\n%s\n", hc.Handover)
	}
	if hc.Broken {
		b.WriteString("this is not toml\n")
	}
	if err := os.WriteFile(h.Config, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return h.lab.own(h.Config)
}

// writeRouters writes a VIP's routers line, if it has any.
func writeRouters(b *strings.Builder, routers []netip.Addr) {
	if len(routers) == 0 {
		return
	}
	var rs []string
	for _, r := range routers {
		rs = append(rs, fmt.Sprintf("%q", r.String()))
	}
	fmt.Fprintf(b, "routers = [%s]\n", strings.Join(rs, ", "))
}

// writeTableVIPs writes the config of HostConfig.TableVIPs.
func writeTableVIPs(b *strings.Builder, n int) error {
	if n > MaxTableVIPs {
		return fmt.Errorf("%d table VIPs, at most %d", n, MaxTableVIPs)
	}
	for i := 1; i <= n; i++ {
		fmt.Fprintf(b, "\n[[vip]]\nname = \"t%d\"\naddress = %q\ninterface = \"eth0\"\n", i, TableVIP(i))
	}
	return nil
}

// StartService starts the host's TCP service: it answers every connection
// with the host's name. It listens on all addresses, so on the VIP too.
func (h *Host) StartService() error {
	var ln net.Listener
	err := inNS(h.NS, func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		return fmt.Errorf("%s: service: %w", h.Name, err)
	}
	h.mu.Lock()
	h.service = ln
	h.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(2 * time.Second))
			io.WriteString(c, h.Name+"\n")
			c.Close()
		}
	}()
	return nil
}

// StopService stops the host's TCP service, as a crashed server would.
func (h *Host) StopService() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.service != nil {
		h.service.Close()
		h.service = nil
	}
}

// Partition cuts the host off from its peers' gossip, both ways, with
// nftables in its own namespace; clients still reach it.
func (h *Host) Partition() error {
	rules := `table inet arpshare_lab {
	chain input { type filter hook input priority 0; udp dport 7946 drop; tcp dport 7946 drop; }
	chain output { type filter hook output priority 0; udp dport 7946 drop; tcp dport 7946 drop; }
}`
	cmd := exec.Command("ip", "netns", "exec", h.NS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: nft: %w: %s", h.Name, err, out)
	}
	return nil
}

// Heal undoes Partition.
func (h *Host) Heal() error {
	if out, err := exec.Command("ip", "netns", "exec", h.NS, "nft", "delete", "table", "inet", "arpshare_lab").CombinedOutput(); err != nil {
		return fmt.Errorf("%s: nft: %w: %s", h.Name, err, out)
	}
	return nil
}

// Run runs the arpshare binary (drain, resume...) against the host's daemon.
func (h *Host) Run(args ...string) (string, error) {
	argv := append([]string{args[0], "--socket", h.Socket}, args[1:]...)
	out, err := exec.Command(h.binary(), argv...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: arpshare %s: %w: %s", h.Name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// binary is the arpshare binary the host runs.
func (h *Host) binary() string {
	if h.Binary != "" {
		return h.Binary
	}
	return h.lab.binary
}

// listenNotify plays systemd's part: it records what the daemon sends to
// NOTIFY_SOCKET.
func (h *Host) listenNotify() error {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: h.Notify, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("%s: notify socket: %w", h.Name, err)
	}
	h.lab.onClose(func() { conn.Close() })
	if err := os.Chmod(h.Notify, 0o666); err != nil { // for a daemon that is not root
		return err
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			h.mu.Lock()
			h.notes = append(h.notes, strings.Split(string(buf[:n]), "\n")...)
			h.mu.Unlock()
		}
	}()
	return nil
}

// Notes returns every line the daemon sent to systemd so far.
func (h *Host) Notes() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.notes...)
}

// Start runs the host's daemon.
func (h *Host) Start() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd != nil {
		return fmt.Errorf("%s: already running", h.Name)
	}
	logf, err := os.OpenFile(h.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	argv := []string{"netns", "exec", h.NS}
	if u := strconv.Itoa(h.lab.user); h.lab.user != 0 {
		argv = append(argv, "setpriv", "--reuid="+u, "--regid="+u, "--clear-groups",
			"--inh-caps=-all,+net_admin,+net_raw,+bpf", "--ambient-caps=-all,+net_admin,+net_raw,+bpf",
			"--bounding-set=-all,+net_admin,+net_raw,+bpf", "--no-new-privs")
	}
	if h.Strace != "" {
		argv = append(argv, "strace", "-f", "-qq", "-c", "-o", h.Strace)
	}
	argv = append(argv, h.binary(), "run", "--config", h.Config, "--log-level", "debug")
	cmd := exec.Command("ip", argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// As systemd with WatchdogSec=3s would.
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+h.Notify, "WATCHDOG_USEC=3000000")
	if h.Journal {
		var st syscall.Stat_t
		if err := syscall.Fstat(int(logf.Fd()), &st); err != nil {
			logf.Close()
			return err
		}
		cmd.Env = append(cmd.Env, fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
	}
	// The daemon must not outlive the lab, even if the lab's process dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := start(cmd); err != nil {
		logf.Close()
		return fmt.Errorf("%s: start daemon: %w", h.Name, err)
	}
	h.cmd, h.exited = cmd, make(chan struct{})
	exited := h.exited
	go func() {
		err := cmd.Wait()
		logf.Close()
		h.mu.Lock()
		h.err, h.cmd = err, nil
		h.mu.Unlock()
		close(exited)
	}()
	return nil
}

// Pdeathsig fires when the thread that started the child exits, not the
// process, and this package ends threads on purpose (see inNS). So every
// daemon is started from one thread that lives as long as the process.
var (
	starterOnce sync.Once
	starter     = make(chan func())
)

func start(cmd *exec.Cmd) error {
	starterOnce.Do(func() {
		go func() {
			runtime.LockOSThread()
			for f := range starter {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	starter <- func() { errc <- cmd.Start() }
	return <-errc
}

// PID returns the daemon's process ID, or 0 when it is not running.
func (h *Host) PID() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil {
		return 0
	}
	return h.cmd.Process.Pid
}

// Signal sends sig to the daemon.
func (h *Host) Signal(sig syscall.Signal) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil {
		return fmt.Errorf("%s: not running", h.Name)
	}
	return h.cmd.Process.Signal(sig)
}

// Scrape fetches the host's metrics page.
func (h *Host) Scrape() (string, error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = inNS(h.NS, func() error {
				conn, err = (&net.Dialer{Timeout: 2 * time.Second}).Dial(network, addr)
				return err
			})
			return conn, err
		},
	}}
	resp, err := client.Get("http://" + MetricsAddr + "/metrics")
	if err != nil {
		return "", fmt.Errorf("%s: scrape: %w", h.Name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: scrape: %s: %s", h.Name, resp.Status, b)
	}
	return string(b), err
}

// Profile returns the daemon's pprof profile name (heap, allocs,
// goroutine...), fetched over its API socket (HostConfig.Pprof).
func (h *Host) Profile(name string) ([]byte, error) {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", h.Socket)
		},
	}}
	resp, err := client.Get("http://arpshare/debug/pprof/" + name)
	if err != nil {
		return nil, fmt.Errorf("%s: pprof %s: %w", h.Name, name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: pprof %s: %s: %s", h.Name, name, resp.Status, b)
	}
	return b, err
}

// Stop sends SIGTERM and waits for the daemon to exit; it returns the exit
// error (nil for exit 0).
func (h *Host) Stop(timeout time.Duration) error {
	return h.signal(syscall.SIGTERM, timeout)
}

// Kill SIGKILLs the daemon, if it runs, and waits for it.
func (h *Host) Kill() {
	h.signal(syscall.SIGKILL, 5*time.Second)
}

func (h *Host) signal(sig syscall.Signal, timeout time.Duration) error {
	h.mu.Lock()
	cmd, exited := h.cmd, h.exited
	h.mu.Unlock()
	if cmd == nil {
		return nil
	}
	cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%s: daemon did not exit within %s of %s", h.Name, timeout, sig)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if sig == syscall.SIGKILL {
		return nil
	}
	return h.err
}

// PowerOff is a power loss: the host's link goes down and its daemon dies
// with no chance to say goodbye.
func (h *Host) PowerOff() error {
	if err := h.Link("down"); err != nil {
		return err
	}
	h.Kill()
	return nil
}

// PowerOn brings the host's link back; start the daemon separately.
func (h *Host) PowerOn() error { return h.Link("up") }

// Status runs `arpshare status --json` against the host's daemon. Exit
// status 5 (the host does not serve) is a status too.
func (h *Host) Status() (api.Status, error) {
	out, err := exec.Command(h.binary(), "status", "--json", "--socket", h.Socket).Output()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) && ee.ExitCode() == 5 {
		err = nil
	}
	if err != nil {
		return api.Status{}, fmt.Errorf("%s: arpshare status: %w: %s", h.Name, err, out)
	}
	var s api.Status
	if err := json.Unmarshal(out, &s); err != nil {
		return api.Status{}, fmt.Errorf("%s: arpshare status: %w", h.Name, err)
	}
	return s, nil
}

// MAC returns the MAC address of the host's eth0.
func (h *Host) MAC() (string, error) {
	var mac string
	err := inNS(h.NS, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		mac = ifi.HardwareAddr.String()
		return nil
	})
	return mac, err
}

// HasVIP reports whether the VIP is on the host's lo.
func (h *Host) HasVIP() (bool, error) {
	out, err := ipOut("-n", h.NS, "-o", "addr", "show", "dev", "lo")
	return strings.Contains(out, " "+VIP.String()+"/32 "), err
}

// WaitMembers waits until every given host's status shows exactly want alive
// members.
func WaitMembers(ctx context.Context, hosts []*Host, want int) error {
	check := func(h *Host) error {
		s, err := h.Status()
		if err != nil {
			return err
		}
		alive := 0
		var others []string
		for _, m := range s.Members {
			if m.State == "alive" {
				alive++
			} else {
				others = append(others, m.Name+"="+m.State)
			}
		}
		if alive != want {
			return fmt.Errorf("%s sees %d alive members, want %d (%d listed; not alive: %s)", h.Name, alive, want, len(s.Members), strings.Join(others, " "))
		}
		return nil
	}
	// Each check runs the arpshare command: in a big lab, checking every
	// host on every turn would keep the machine busy. Wait for each host
	// in turn, then check them all once more.
	for {
		var last error
		for i := 0; i < len(hosts); {
			if last = check(hosts[i]); last == nil {
				i++
				continue
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w: %v", ctx.Err(), last)
			case <-time.After(100 * time.Millisecond):
			}
		}
		for _, h := range hosts {
			if last = check(h); last != nil {
				break
			}
		}
		if last == nil {
			break
		}
	}
	return waitSettled(ctx, hosts)
}

// waitSettled waits until every host's view of each VIP lists as eligible
// every given host that can serve it by its own account (healthy, link up,
// not draining). A member can be alive a moment before its link watcher
// has opened the ARP socket and gossiped so; a test that reads the
// clients' assignment then would see them move again soon after.
func waitSettled(ctx context.Context, hosts []*Host) error {
	for {
		last := settled(hosts)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func settled(hosts []*Host) error {
	statuses := make([]api.Status, len(hosts))
	can := map[string][]string{} // VIP name -> hosts that can serve it
	for i, h := range hosts {
		s, err := h.Status()
		if err != nil {
			return err
		}
		statuses[i] = s
		for _, v := range s.VIPs {
			// A link still opening its socket is a moment from serving:
			// wait for it (a link that is down or missing is not).
			if strings.HasSuffix(v.Link, "not open yet") {
				return fmt.Errorf("%s: %s is still opening (vip %s)", h.Name, v.Link, v.Name)
			}
			if v.Healthy && v.Link == "" && v.Answering && !s.Draining {
				can[v.Name] = append(can[v.Name], h.Name)
			}
		}
	}
	for i, s := range statuses {
		for _, v := range s.VIPs {
			for _, name := range can[v.Name] {
				if !slices.Contains(v.Eligible, name) {
					return fmt.Errorf("%s does not yet count %s eligible for %s (eligible: %v)", hosts[i].Name, name, v.Name, v.Eligible)
				}
			}
		}
	}
	return nil
}

// Dial connects from the client to the VIP's service and returns the name of
// the host that answered.
func (c *Client) Dial(timeout time.Duration) (string, error) {
	return c.DialVIP(VIP, timeout)
}

// DialVIP is Dial to another VIP.
func (c *Client) DialVIP(vip netip.Addr, timeout time.Duration) (string, error) {
	name, _, err := c.DialTimed(vip, timeout)
	return name, err
}

// DialTimed is DialVIP that also says how long the connection took to be
// made and greeted, timed in the client's namespace.
func (c *Client) DialTimed(vip netip.Addr, timeout time.Duration) (name string, took time.Duration, err error) {
	err = inNS(c.NS, func() error {
		start := time.Now()
		conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(vip, uint16(port)).String(), timeout)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(timeout))
		name, err = bufio.NewReader(conn).ReadString('\n')
		took = time.Since(start)
		name = strings.TrimSpace(name)
		if err != nil && !(errors.Is(err, io.EOF) && name != "") {
			return err
		}
		return nil
	})
	return name, took, err
}

// Close stops every daemon and removes every namespace and file of the lab.
func (l *Lab) Close() {
	l.mu.Lock()
	cs := l.cleanups
	l.cleanups = nil
	l.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
	if l.ownDir {
		os.RemoveAll(l.Dir)
	}
}

// Link runs `ip link set eth0 ARGS...` in the host's namespace.
func (h *Host) Link(args ...string) error {
	return ip(append([]string{"-n", h.NS, "link", "set", "eth0"}, args...)...)
}

// ForgetVIP flushes the client's ARP entry for the VIP, so that its next
// connection starts with a broadcast ARP request.
func (c *Client) ForgetVIP() error { return c.Forget(VIP) }

// Forget flushes the client's neighbour entry for vip.
func (c *Client) Forget(vip netip.Addr) error {
	return ip("-n", c.NS, "neigh", "flush", "to", vip.String(), "dev", "eth0")
}

// LogLine is one line of a daemon's log.
type LogLine struct {
	At   time.Time
	Text string
}

// LogSince returns the lines of the host's daemon log stamped at or after
// t, in order (a line without a time is skipped).
func (h *Host) LogSince(t time.Time) ([]LogLine, error) {
	b, err := os.ReadFile(h.Log)
	if err != nil {
		return nil, err
	}
	var out []LogLine
	for _, line := range strings.Split(string(b), "\n") {
		stamp, ok := strings.CutPrefix(line, "time=")
		if !ok {
			continue
		}
		stamp, _, _ = strings.Cut(stamp, " ")
		at, err := time.Parse(time.RFC3339Nano, stamp)
		if err != nil || at.Before(t) {
			continue
		}
		out = append(out, LogLine{At: at, Text: line})
	}
	return out, nil
}
