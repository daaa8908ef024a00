package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/bpf/handover"
)

// Defaults, in one place. Each says where its number comes from.
const (
	// DefaultConfigPath is where packages install the config.
	DefaultConfigPath = "/etc/arpshare/arpshare.toml"
	// DefaultSocket is under systemd's RuntimeDirectory=arpshare.
	DefaultSocket = "/run/arpshare/arpshare.sock"
	// DefaultCluster is the memberlist label when none is set.
	DefaultCluster = "arpshare"
	// DefaultGossipPort is memberlist's own default port.
	DefaultGossipPort = 7946

	// The memberlist timings below declare a hard-dead host dead in about
	// half a second on a LAN: it is probed within one interval, the probe
	// fails after the timeout, the indirect probes by the end of the
	// interval, and with a peer's confirmation it stays suspect for
	// suspicion_mult intervals (memberlist scales that by log10 of the
	// cluster size above ten hosts); each survivor then checks the death
	// itself (gossip.Cluster.verify, two probe timeouts). memberlist's LAN
	// defaults (1s, 500ms, 4, 200ms) take about six seconds. Measured, with
	// the false deaths of faster and slower settings: docs/benchmarks.md.
	DefaultProbeInterval  = 100 * time.Millisecond
	DefaultProbeTimeout   = 50 * time.Millisecond
	DefaultSuspicionMult  = 3
	DefaultGossipInterval = 100 * time.Millisecond

	// DefaultStateDir is systemd's StateDirectory=arpshare; it keeps the
	// drained flag across restarts.
	DefaultStateDir = "/var/lib/arpshare"
	// MaxWeight bounds node.weight: a host of weight w scores w hashes per
	// client, so the cost of a lookup grows with the sum of the weights.
	// Peers refuse a host whose gossiped weight exceeds it.
	MaxWeight = gossip.MaxWeight
	// DefaultMaxClients caps the client table: four /16s of clients. The
	// table takes ~100 bytes a client, the process ~200 with the garbage
	// collector's headroom: about 75 MB of RSS when full, 40 MB with
	// 100,000 clients (docs/benchmarks.md).
	DefaultMaxClients = 262144
	// MinMaxClients bounds node.max_clients from below: a table smaller
	// than a few hundred clients is a typo, and would churn.
	MinMaxClients = 256
	// MaxMaxClients bounds it from above: ten million clients is about a
	// gigabyte of table.
	MaxMaxClients = 10_000_000

	// DefaultRepointRate is how many re-pointing packets a host sends per
	// second at most, as before it was a setting: a segment of 65,536
	// clients is re-pointed in about 13 s per host. Switches that police
	// ARP (Cisco dynamic ARP inspection: 15 packets/s per untrusted port,
	// then the port is error-disabled) need a rate below theirs; see
	// docs/operations.md.
	DefaultRepointRate = 5000
	// MaxRepointRate bounds node.repoint_rate: a gigabit link carries about
	// 1.5 million minimum-size frames a second.
	MaxRepointRate = 1000000
	// DefaultReassertInterval is how often each host re-points every client
	// it owns once more, as a safety net for a client answered by a host
	// that does not own it (a lost packet, a view change nobody noticed):
	// each client gets one packet a minute, far below any ARP policing.
	DefaultReassertInterval = time.Minute
	// DefaultReassertRate caps that periodic round at 5 packets per
	// second, a third of the ARP that Cisco dynamic ARP inspection lets an
	// untrusted port send (15 packets/s), so that the answers to the
	// clients' own requests fit beside it; a round is spread over the
	// whole interval when that is slower. Failover keeps repoint_rate.
	// At 5 packets/s a minute holds 300 clients: a host owning more takes
	// longer than the interval for a round, and skips the ticks that come
	// while one runs.
	DefaultReassertRate = 5

	// UnitStopTimeout is the packaged unit's TimeoutStopSec
	// (packaging/arpshare.service): a graceful stop that takes longer is
	// killed, with the VIPs left on lo and no leave sent.
	UnitStopTimeout = 45 * time.Second
	// StopOverhead is what a graceful stop takes besides
	// handover.stop_wait: draining (a second, more under load), leaving
	// (up to a second), taking the VIPs off lo, with room for a loaded
	// host. So handover.stop_wait may be at most 35 s.
	StopOverhead = 10 * time.Second

	// Health checks, as haproxy and keepalived default them: a check a
	// second, and two in a row to change state, so one lost check (or one
	// slow answer) moves nobody.
	DefaultCheckInterval = time.Second
	DefaultCheckTimeout  = 500 * time.Millisecond
	DefaultCheckRise     = 2
	DefaultCheckFall     = 2
)

// Config is a checked configuration.
type Config struct {
	Path string
	// Warnings are not errors, but an operator should read them.
	Warnings []string
	Node     NodeConfig
	Gossip   GossipConfig
	VIPs     []VIP
	API      APIConfig
	Handover handover.Config
}

// NodeConfig describes this host.
type NodeConfig struct {
	Name     string
	Weight   int
	StateDir string
	// MaxClients caps the client table (all VIPs together).
	MaxClients int
	// RepointRate is how many re-pointing packets per second this host
	// sends at most.
	RepointRate int
	// ReassertInterval is how often this host re-points every client it
	// owns once more; 0: never.
	ReassertInterval time.Duration
	// ReassertRate is how many packets per second that periodic round
	// sends at most.
	ReassertRate int
	// FastPath says whether ARP requests of known clients are answered in
	// the kernel (package internal/bpf/fastpath).
	FastPath FastPath
	// ProposeRouters: neighbours that forward new connections from
	// several addresses to a VIP are proposed for vip.routers in status
	// (package internal/propose).
	ProposeRouters bool
}

// FastPath is node.fast_path.
type FastPath string

// Values of node.fast_path.
const (
	FastPathAuto FastPath = "auto" // in the kernel if it allows, else user space with a warning
	FastPathOn   FastPath = "on"   // in the kernel: the daemon does not start if it refuses
	FastPathOff  FastPath = "off"  // user space only
)

// GossipConfig configures memberlist.
type GossipConfig struct {
	Bind    netip.AddrPort
	Peers   []netip.AddrPort
	KeyFile string
	// Keys from key_file: the first encrypts, all decrypt (for rotation).
	// Nil only when Insecure.
	Keys           [][]byte
	Cluster        string
	Insecure       bool
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	SuspicionMult  int
	GossipInterval time.Duration
	Expect         int // 0: not set
}

// VIP is one shared address.
type VIP struct {
	Name      string
	Address   netip.Addr
	Interface string
	// WaitForInterface: Interface may be missing when the daemon starts
	// (made later: a VLAN, bond or tunnel); `arpshare check` then accepts it.
	WaitForInterface bool
	Mode             policy.Mode
	Check            *Check // nil: healthy while the daemon runs
	// Routers whose traffic to the VIP is spread over the hosts by flow
	// (package internal/bpf/spread); in the VIP's family.
	Routers []netip.Addr
}

// Policy is how the VIP's clients are shared.
func (v VIP) Policy() policy.Policy { return policy.Of(v.Mode) }

// Check is a VIP's health check: exactly one of TCP, HTTP and Exec is set.
type Check struct {
	TCP      string   // host:port that must accept a connection
	HTTP     string   // URL that must answer 2xx
	Exec     []string // command that must exit 0; no shell
	Interval time.Duration
	Timeout  time.Duration
	Rise     int // consecutive passes to become healthy
	Fall     int // consecutive failures to become unhealthy
}

// APIConfig configures the local API.
type APIConfig struct {
	Socket  string
	Metrics string // host:port for Prometheus; empty: none
	Pprof   bool
}

// The raw layer: decoded strictly from TOML, pointers mean "not set".
type rawConfig struct {
	Node     rawNode     `toml:"node"`
	Gossip   rawGossip   `toml:"gossip"`
	VIPs     []rawVIP    `toml:"vip"`
	API      rawAPI      `toml:"api"`
	Handover rawHandover `toml:"handover"`
}

type rawNode struct {
	Name       *string `toml:"name"`
	Weight     *int    `toml:"weight"`
	StateDir   *string `toml:"state_dir"`
	MaxClients *int    `toml:"max_clients"`
	// RepointRate is packets per second.
	RepointRate      *int    `toml:"repoint_rate"`
	ReassertInterval *string `toml:"reassert_interval"`
	// ReassertRate is packets per second.
	ReassertRate   *int    `toml:"reassert_rate"`
	FastPath       *string `toml:"fast_path"`
	ProposeRouters *bool   `toml:"propose_routers"`
}

type rawGossip struct {
	Bind           *string  `toml:"bind"`
	Peers          []string `toml:"peers"`
	KeyFile        *string  `toml:"key_file"`
	Cluster        *string  `toml:"cluster"`
	Insecure       *bool    `toml:"insecure"`
	ProbeInterval  *string  `toml:"probe_interval"`
	ProbeTimeout   *string  `toml:"probe_timeout"`
	SuspicionMult  *int     `toml:"suspicion_mult"`
	GossipInterval *string  `toml:"gossip_interval"`
	Expect         *int     `toml:"expect"`
}

type rawVIP struct {
	Name             *string   `toml:"name"`
	Address          *string   `toml:"address"`
	Interface        *string   `toml:"interface"`
	WaitForInterface *bool     `toml:"wait_for_interface"`
	Mode             *string   `toml:"mode"`
	Check            *rawCheck `toml:"check"`
	Routers          []string  `toml:"routers"`
}

type rawCheck struct {
	TCP      *string  `toml:"tcp"`
	HTTP     *string  `toml:"http"`
	Exec     []string `toml:"exec"`
	Interval *string  `toml:"interval"`
	Timeout  *string  `toml:"timeout"`
	Rise     *int     `toml:"rise"`
	Fall     *int     `toml:"fall"`
}

type rawAPI struct {
	Socket  *string `toml:"socket"`
	Metrics *string `toml:"metrics"`
	Pprof   *bool   `toml:"pprof"`
}

type rawHandover struct {
	Enabled  *bool   `toml:"enabled"`
	Grace    *string `toml:"grace"`
	Idle     *string `toml:"idle"`
	StopWait *string `toml:"stop_wait"`
}

// LoadConfig reads and checks the config file at path. The error lists every
// problem found, each naming the file and line.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig checks config data read from path (used for messages and to
// find a relative key file).
func ParseConfig(path string, data []byte) (*Config, error) {
	var raw rawConfig
	md, err := decodeChecked(path, data, &raw)
	if err != nil {
		return nil, err
	}
	c := &checker{path: path, lines: strings.Split(string(data), "\n")}
	for _, k := range md.Undecoded() {
		c.errAt(c.lineOfKey(k), "unknown key %q", k.String())
	}
	cfg := c.check(&raw)
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	return cfg, nil
}

type checker struct {
	path  string
	lines []string
	errs  []error
}

func (c *checker) errAt(line int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if line > 0 {
		c.errs = append(c.errs, fmt.Errorf("%s:%d: %s", c.path, line, msg))
		return
	}
	c.errs = append(c.errs, fmt.Errorf("%s: %s", c.path, msg))
}

// line finds where key is set in table, or where the table starts if the
// key is not set there, or 0. For [[vip]] and the tables under it
// (vip.check), index says which vip. Keys may be set plainly, dotted
// (check.tcp = ..., node.weight = ... at the top) or in inline tables
// (check = { tcp = ... }).
func (c *checker) line(table string, index int, key string) int {
	l, _ := c.find(table, index, key)
	return l
}

// find is line, and says whether the key itself was found.
func (c *checker) find(table string, index int, key string) (int, bool) {
	want := key
	if table != "" {
		want = table + "." + key
	}
	counted := table == "vip" || strings.HasPrefix(table, "vip.")
	current, seen, start := "", -1, 0
	for i, l := range c.lines {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "[") {
			current = strings.TrimSpace(strings.Trim(strings.SplitN(l, "#", 2)[0], "[] \t"))
			if strings.HasPrefix(l, "[[") && current == "vip" {
				seen++
			}
			if current == table && (!counted || seen == index) && start == 0 {
				start = i + 1
			}
			continue
		}
		if counted && seen != index {
			continue
		}
		for _, k := range keysOnLine(current, l) {
			if k == want {
				return i + 1, true
			}
			if start == 0 && table != "" && strings.HasPrefix(k, table+".") {
				start = i + 1
			}
		}
	}
	return start, false
}

// keysOnLine returns the full paths of the keys a line sets inside table:
// "a.b = 1" sets table.a.b, "a = { b = 1, c = { d = 2 } }" sets table.a,
// table.a.b, table.a.c and table.a.c.d.
func keysOnLine(table, line string) []string {
	k, v, ok := strings.Cut(line, "=")
	if !ok || strings.HasPrefix(line, "#") {
		return nil
	}
	var parts []string
	for _, p := range strings.Split(k, ".") {
		parts = append(parts, strings.Trim(strings.TrimSpace(p), `"'`))
	}
	full := strings.Join(parts, ".")
	if table != "" {
		full = table + "." + full
	}
	out := []string{full}
	v = strings.TrimSpace(v)
	if !strings.HasPrefix(v, "{") {
		return out
	}
	// Split the inline table's body at the commas of its own level.
	depth, from := 0, 1
	body := v
	for i, r := range body {
		switch r {
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				out = append(out, keysOnLine(full, body[from:i])...)
				return out
			}
		case ',':
			if depth == 1 {
				out = append(out, keysOnLine(full, body[from:i])...)
				from = i + 1
			}
		}
	}
	return out
}

// lineOfKey finds a key the decoder names (an unknown key, a type error).
func (c *checker) lineOfKey(k toml.Key) int {
	if len(k) == 1 {
		return c.line("", 0, k[0])
	}
	table := strings.Join(k[:len(k)-1], ".")
	first := 0
	for i := range len(c.lines) + 1 { // every [[vip]] index, until one has the key
		l, exact := c.find(table, i, k[len(k)-1])
		if exact {
			return l
		}
		if first == 0 {
			first = l
		}
		if table != "vip" && !strings.HasPrefix(table, "vip.") {
			break
		}
	}
	return first
}

func (c *checker) duration(s *string, def time.Duration, line int, what string) time.Duration {
	if s == nil {
		return def
	}
	d, err := time.ParseDuration(*s)
	if err != nil || d <= 0 {
		c.errAt(line, "%s: %q is not a positive duration such as \"200ms\"", what, *s)
		return def
	}
	return d
}

func addrPort(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not IP:port", s)
	}
	return netip.AddrPortFrom(a, DefaultGossipPort), nil
}

// check checks the raw config section by section; each section reports its
// own errors, at the line of the key concerned.
func (c *checker) check(raw *rawConfig) *Config {
	cfg := &Config{Path: c.path}
	cfg.Node = c.node(&raw.Node)
	cfg.Gossip = c.gossip(&raw.Gossip)
	cfg.Warnings = gossipWarnings(cfg.Gossip)
	cfg.VIPs = c.vips(raw.VIPs)
	c.metaFits(cfg)
	cfg.API = c.api(&raw.API)
	cfg.Handover = c.handover(&raw.Handover)
	return cfg
}

// node checks [node].
func (c *checker) node(raw *rawNode) NodeConfig {
	n := NodeConfig{
		Weight: 1, MaxClients: DefaultMaxClients, StateDir: DefaultStateDir,
		RepointRate: DefaultRepointRate, ReassertInterval: DefaultReassertInterval, ReassertRate: DefaultReassertRate,
		FastPath: FastPathAuto,
	}
	if raw.Name != nil {
		n.Name = *raw.Name
	} else if h, err := os.Hostname(); err == nil {
		n.Name = h
	}
	if n.Name == "" || len(n.Name) > 128 || strings.ContainsAny(n.Name, " \t\n") {
		c.errAt(c.line("node", 0, "name"), "node.name %q must be 1 to 128 characters without spaces", n.Name)
	}
	if raw.Weight != nil {
		n.Weight = *raw.Weight
		if n.Weight < 1 || n.Weight > MaxWeight {
			c.errAt(c.line("node", 0, "weight"), "node.weight %d: must be 1 to %d", n.Weight, MaxWeight)
		}
	}
	if raw.MaxClients != nil {
		n.MaxClients = *raw.MaxClients
		if n.MaxClients < MinMaxClients || n.MaxClients > MaxMaxClients {
			c.errAt(c.line("node", 0, "max_clients"), "node.max_clients %d: must be %d to %d", n.MaxClients, MinMaxClients, MaxMaxClients)
		}
	}
	if raw.StateDir != nil {
		n.StateDir = *raw.StateDir
		if !filepath.IsAbs(n.StateDir) {
			c.errAt(c.line("node", 0, "state_dir"), "node.state_dir %q must be an absolute path", n.StateDir)
		}
	}
	if raw.RepointRate != nil {
		n.RepointRate = *raw.RepointRate
		if n.RepointRate < 1 || n.RepointRate > MaxRepointRate {
			c.errAt(c.line("node", 0, "repoint_rate"), "node.repoint_rate %d: must be 1 to %d packets per second", n.RepointRate, MaxRepointRate)
		}
	}
	if raw.ReassertRate != nil {
		n.ReassertRate = *raw.ReassertRate
		if n.ReassertRate < 1 || n.ReassertRate > MaxRepointRate {
			c.errAt(c.line("node", 0, "reassert_rate"), "node.reassert_rate %d: must be 1 to %d packets per second", n.ReassertRate, MaxRepointRate)
		}
	}
	if s := raw.ReassertInterval; s != nil && *s == "0" {
		n.ReassertInterval = 0
	} else {
		n.ReassertInterval = c.duration(s, DefaultReassertInterval, c.line("node", 0, "reassert_interval"), "node.reassert_interval (or \"0\" for never)")
	}
	if raw.FastPath != nil {
		n.FastPath = FastPath(*raw.FastPath)
		if f := n.FastPath; f != FastPathAuto && f != FastPathOn && f != FastPathOff {
			c.errAt(c.line("node", 0, "fast_path"), "node.fast_path %q: must be \"auto\", \"on\" or \"off\"", f)
		}
	}
	if raw.ProposeRouters != nil {
		n.ProposeRouters = *raw.ProposeRouters
	}
	return n
}

// gossip checks [gossip].
func (c *checker) gossip(raw *rawGossip) GossipConfig {
	g := GossipConfig{Cluster: DefaultCluster, SuspicionMult: DefaultSuspicionMult}
	at := func(key string) int { return c.line("gossip", 0, key) }
	if raw.Bind == nil {
		c.errAt(at("bind"), "gossip.bind is required (IP:port memberlist listens on)")
	} else if ap, err := addrPort(*raw.Bind); err != nil {
		c.errAt(at("bind"), "gossip.bind: %v", err)
	} else if ap.Addr().IsUnspecified() || ap.Port() == 0 {
		c.errAt(at("bind"), "gossip.bind %q: need a specific address and port, the one peers reach", *raw.Bind)
	} else {
		g.Bind = ap
	}
	for _, p := range raw.Peers {
		ap, err := addrPort(p)
		if err != nil {
			c.errAt(at("peers"), "gossip.peers: %v", err)
			continue
		}
		g.Peers = append(g.Peers, ap)
	}
	if raw.Cluster != nil {
		g.Cluster = *raw.Cluster
		if l := len(*raw.Cluster); l == 0 || l > 255 {
			c.errAt(at("cluster"), "gossip.cluster must be 1 to 255 bytes")
		}
	}
	c.gossipKeys(raw, &g)
	g.ProbeInterval = c.duration(raw.ProbeInterval, DefaultProbeInterval, at("probe_interval"), "gossip.probe_interval")
	g.ProbeTimeout = c.duration(raw.ProbeTimeout, DefaultProbeTimeout, at("probe_timeout"), "gossip.probe_timeout")
	g.GossipInterval = c.duration(raw.GossipInterval, DefaultGossipInterval, at("gossip_interval"), "gossip.gossip_interval")
	if g.ProbeTimeout >= g.ProbeInterval {
		c.errAt(at("probe_timeout"), "gossip.probe_timeout (%s) must be shorter than probe_interval (%s)", g.ProbeTimeout, g.ProbeInterval)
	}
	if raw.SuspicionMult != nil {
		g.SuspicionMult = *raw.SuspicionMult
		if *raw.SuspicionMult < 1 || *raw.SuspicionMult > 100 {
			c.errAt(at("suspicion_mult"), "gossip.suspicion_mult must be 1 to 100")
		}
	}
	if raw.Expect != nil {
		g.Expect = *raw.Expect
		if *raw.Expect < 1 {
			c.errAt(at("expect"), "gossip.expect %d: must be at least 1", *raw.Expect)
		}
	}
	return g
}

// gossipKeys checks gossip.insecure and gossip.key_file, and reads the keys.
func (c *checker) gossipKeys(raw *rawGossip, g *GossipConfig) {
	if raw.Insecure != nil {
		g.Insecure = *raw.Insecure
	}
	switch {
	case raw.KeyFile != nil:
		g.KeyFile = *raw.KeyFile
		if !filepath.IsAbs(g.KeyFile) {
			g.KeyFile = filepath.Join(filepath.Dir(c.path), g.KeyFile)
		}
		keys, err := ReadKeys(g.KeyFile)
		if err != nil {
			c.errAt(c.line("gossip", 0, "key_file"), "gossip.key_file: %v", err)
		}
		g.Keys = keys
	case !g.Insecure:
		c.errAt(c.line("gossip", 0, "key_file"), "gossip.key_file is required (make one with `arpshare keygen`), or set insecure = true")
	}
}

// gossipWarnings says what in a valid [gossip] section is most likely a
// mistake. It is the one place these warnings are made: `arpshare check`
// prints them, and the daemon logs them as it starts.
func gossipWarnings(g GossipConfig) []string {
	var w []string
	if g.Expect == 0 {
		w = append(w, "gossip.expect is not set: if the gossip network splits while clients still reach both sides, hosts on both sides answer the same clients; "+
			"a host whose peers do not answer at all (down, or a firewall dropping the gossip port) answers every client alone")
	}
	if !slices.ContainsFunc(g.Peers, func(p netip.AddrPort) bool { return p != g.Bind }) {
		w = append(w, "gossip.peers names no host but this one: it joins nobody and answers every client of its VIPs alone; list the cluster's hosts in peers")
	}
	// Every host of the cluster should be in peers (this one may be): more
	// expected hosts than named ones is a typo, or a peers list to finish.
	named := map[netip.AddrPort]bool{}
	for _, p := range append([]netip.AddrPort{g.Bind}, g.Peers...) {
		if p.IsValid() {
			named[p] = true
		}
	}
	if n := len(named); g.Expect > n && len(g.Peers) > 0 {
		w = append(w, fmt.Sprintf("gossip.expect = %d is more than the %d hosts gossip.bind and gossip.peers name: this host loses its quorum whenever a named host is down; list every host in peers", g.Expect, n))
	}
	return w
}

// vips checks every [[vip]], and that no two share a name or an address.
func (c *checker) vips(raw []rawVIP) []VIP {
	if len(raw) == 0 {
		c.errAt(0, "no [[vip]]: nothing to share")
	}
	var out []VIP
	names, addrs := map[string]int{}, map[netip.Addr]string{}
	for i, rv := range raw {
		v := VIP{}
		where := fmt.Sprintf("vip #%d", i+1)
		if rv.Name == nil || *rv.Name == "" {
			c.errAt(c.line("vip", i, "name"), "%s: name is required", where)
		} else {
			v.Name = *rv.Name
			where = fmt.Sprintf("vip %q", v.Name)
			if _, dup := names[v.Name]; dup {
				c.errAt(c.line("vip", i, "name"), "%s: name used twice", where)
			}
			names[v.Name] = i
		}
		if a, ok := c.vipAddress(i, where, rv.Address); ok {
			if other, dup := addrs[a]; dup {
				c.errAt(c.line("vip", i, "address"), "%s: address %s is also vip %q", where, a, other)
			}
			addrs[a] = v.Name
			v.Address = a
		}
		v.Interface = c.vipInterface(i, where, rv.Interface)
		v.WaitForInterface = rv.WaitForInterface != nil && *rv.WaitForInterface
		v.Mode = policy.Hash
		if rv.Mode != nil {
			if p, err := policy.Parse(*rv.Mode); err != nil {
				c.errAt(c.line("vip", i, "mode"), "%s: %v", where, err)
			} else {
				v.Mode = p.Mode()
			}
		}
		if rv.Check != nil {
			v.Check = c.vipCheck(i, where, rv.Check)
		}
		v.Routers = c.vipRouters(i, where, v.Address, rv.Routers)
		out = append(out, v)
	}
	return out
}

// vipAddress checks the address of vip #i (where names it in errors).
func (c *checker) vipAddress(i int, where string, raw *string) (netip.Addr, bool) {
	at := c.line("vip", i, "address")
	if raw == nil {
		c.errAt(at, "%s: address is required", where)
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(*raw)
	switch {
	case err != nil:
		c.errAt(at, "%s: address %q is not an IP address", where, *raw)
	case a.Zone() != "" || a.Is4In6():
		c.errAt(at, "%s: address %s: write an IPv4 address plainly and an IPv6 one without a zone", where, a)
	case a.IsLinkLocalUnicast():
		c.errAt(at, "%s: address %s is link-local: it cannot be shared", where, a)
	case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		c.errAt(at, "%s: address %s cannot be shared", where, a)
	default:
		return a, true
	}
	return netip.Addr{}, false
}

// vipInterface checks the interface of vip #i; "" if it is not valid.
func (c *checker) vipInterface(i int, where string, raw *string) string {
	at := c.line("vip", i, "interface")
	switch {
	case raw == nil || *raw == "":
		c.errAt(at, "%s: interface is required", where)
	case *raw == "lo":
		c.errAt(at, "%s: interface lo: the VIP is served on the interface clients reach", where)
	case len(*raw) > 15 || strings.ContainsAny(*raw, "/ \t"):
		c.errAt(at, "%s: interface %q is not a valid interface name", where, *raw)
	default:
		return *raw
	}
	return ""
}

// vipCheck checks [vip.check] of vip #i.
func (c *checker) vipCheck(i int, where string, rc *rawCheck) *Check {
	at := func(key string) int { return c.line("vip.check", i, key) }
	ch := &Check{Rise: DefaultCheckRise, Fall: DefaultCheckFall}
	kinds := 0
	if rc.TCP != nil {
		kinds++
		ch.TCP = *rc.TCP
		if _, port, err := net.SplitHostPort(ch.TCP); err != nil || port == "" {
			c.errAt(at("tcp"), "%s: check.tcp %q is not host:port", where, ch.TCP)
		}
	}
	if rc.HTTP != nil {
		kinds++
		ch.HTTP = *rc.HTTP
		if u, err := url.Parse(ch.HTTP); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			c.errAt(at("http"), "%s: check.http %q is not an http:// or https:// URL", where, ch.HTTP)
		}
	}
	if rc.Exec != nil {
		kinds++
		ch.Exec = rc.Exec
		if len(ch.Exec) == 0 || !filepath.IsAbs(ch.Exec[0]) {
			c.errAt(at("exec"), "%s: check.exec must start with an absolute path (it runs with no shell)", where)
		}
	}
	if kinds != 1 {
		c.errAt(at("tcp"), "%s: check needs exactly one of tcp, http and exec", where)
	}
	ch.Interval = c.duration(rc.Interval, DefaultCheckInterval, at("interval"), where+": check.interval")
	ch.Timeout = c.duration(rc.Timeout, DefaultCheckTimeout, at("timeout"), where+": check.timeout")
	if ch.Timeout > ch.Interval {
		c.errAt(at("timeout"), "%s: check.timeout (%s) must not exceed check.interval (%s)", where, ch.Timeout, ch.Interval)
	}
	for _, n := range []struct {
		key string
		raw *int
		dst *int
	}{{"rise", rc.Rise, &ch.Rise}, {"fall", rc.Fall, &ch.Fall}} {
		if n.raw != nil {
			*n.dst = *n.raw
			if *n.raw < 1 || *n.raw > 100 {
				c.errAt(at(n.key), "%s: check.%s %d: must be 1 to 100", where, n.key, *n.raw)
			}
		}
	}
	return ch
}

// metaFits checks that the gossip metadata fits with every VIP healthy and
// every interface's MAC.
func (c *checker) metaFits(cfg *Config) {
	full := cfg.Meta(true, nil)
	full.Leaving, full.Repointed, full.Seen = true, math.MaxUint32, math.MaxUint32 // a stop's and a drain's
	full.MinVersion, full.Software = gossip.MinMetaVersion, strings.Repeat("0", gossip.MaxSoftwareLen)
	for range cfg.Interfaces() {
		full.MACs = append(full.MACs, "00:00:00:00:00:00")
	}
	if _, err := full.Encode(); err != nil {
		c.errAt(0, "%v", err)
	}
}

// api checks [api].
func (c *checker) api(raw *rawAPI) APIConfig {
	a := APIConfig{Socket: DefaultSocket}
	if raw.Socket != nil {
		a.Socket = *raw.Socket
		if !filepath.IsAbs(a.Socket) {
			c.errAt(c.line("api", 0, "socket"), "api.socket %q must be an absolute path", a.Socket)
		}
	}
	if raw.Metrics != nil {
		a.Metrics = *raw.Metrics
		if _, port, err := net.SplitHostPort(a.Metrics); err != nil || port == "" {
			c.errAt(c.line("api", 0, "metrics"), "api.metrics %q is not host:port", a.Metrics)
		}
	}
	if raw.Pprof != nil {
		a.Pprof = *raw.Pprof
	}
	return a
}

// handover checks [handover].
func (c *checker) handover(raw *rawHandover) handover.Config {
	hc := handover.DefaultConfig()
	if raw.Enabled != nil {
		hc.Enabled = *raw.Enabled
	}
	hc.Grace = c.duration(raw.Grace, hc.Grace, c.line("handover", 0, "grace"), "handover.grace")
	hc.Idle = c.duration(raw.Idle, hc.Idle, c.line("handover", 0, "idle"), "handover.idle")
	hc.StopWait = c.duration(raw.StopWait, hc.StopWait, c.line("handover", 0, "stop_wait"), "handover.stop_wait")
	if hc.StopWait+StopOverhead > UnitStopTimeout {
		c.errAt(c.line("handover", 0, "stop_wait"), "handover.stop_wait %s: with the %s a graceful stop takes besides (drain, leave), it exceeds the unit's TimeoutStopSec=%s, after which systemd kills the daemon with the VIPs left on lo and no leave: at most %s",
			hc.StopWait, StopOverhead, UnitStopTimeout, UnitStopTimeout-StopOverhead)
	}
	return hc
}

// Meta is the gossip metadata of this host; healthy says which VIPs pass
// their check (nil: all of them).
func (cfg *Config) Meta(draining bool, healthy map[netip.Addr]bool) gossip.Meta {
	m := gossip.Meta{Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: cfg.Node.Weight, Draining: draining}
	for _, v := range cfg.VIPs {
		if healthy == nil || healthy[v.Address] {
			m.VIPs = append(m.VIPs, v.Address)
		} else {
			m.Unhealthy = append(m.Unhealthy, v.Address)
		}
	}
	return m
}

// Interfaces returns the serving interfaces, each once, in config order.
func (cfg *Config) Interfaces() []string {
	var out []string
	for _, v := range cfg.VIPs {
		if v.Interface != "" && !slices.Contains(out, v.Interface) {
			out = append(out, v.Interface)
		}
	}
	return out
}

// ReadKeys reads a gossip key file: one base64 key per line, as `arpshare
// keygen` prints them. The first line is the key gossip is encrypted with;
// the others are accepted too, which is how keys are rotated without a
// split (see operations.md). Empty lines and # comments are ignored.
func ReadKeys(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: not base64 (make a key with `arpshare keygen`)", path, i+1)
		}
		switch len(key) {
		case 16, 24, 32:
		default:
			return nil, fmt.Errorf("%s:%d: key is %d bytes, want 16, 24 or 32 (AES-128, -192 or -256)", path, i+1, len(key))
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no key (make one with `arpshare keygen`)", path)
	}
	return keys, nil
}

// SocketFromConfig returns api.socket from the config file at path, or the
// default when the file does not set it. Only that key is read: a client
// command must not need the gossip key, nor fail on an unrelated error.
func SocketFromConfig(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read config: %w", err)
	}
	var raw struct {
		API struct {
			Socket *string `toml:"socket"`
		} `toml:"api"`
	}
	if _, err := toml.Decode(string(data), &raw); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if raw.API.Socket == nil || *raw.API.Socket == "" {
		return DefaultSocket, nil
	}
	return *raw.API.Socket, nil
}
