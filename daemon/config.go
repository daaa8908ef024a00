package daemon

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/arpshare/arpshare/gossip"
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

	// The memberlist timings below declare a hard-dead host dead in about a
	// second on a LAN: it is probed within one interval, the probe fails
	// after the timeout, and with three or fewer hosts it stays suspect for
	// suspicion_mult intervals (memberlist scales that by log10 of the
	// cluster size above ten hosts). memberlist's LAN defaults (1s, 500ms,
	// 4, 200ms) take about six seconds.
	DefaultProbeInterval  = 200 * time.Millisecond
	DefaultProbeTimeout   = 100 * time.Millisecond
	DefaultSuspicionMult  = 3
	DefaultGossipInterval = 100 * time.Millisecond
)

// Config is a checked configuration.
type Config struct {
	Path   string
	Node   NodeConfig
	Gossip GossipConfig
	VIPs   []VIP
	API    APIConfig
}

// NodeConfig describes this host.
type NodeConfig struct {
	Name string
}

// GossipConfig configures memberlist.
type GossipConfig struct {
	Bind           netip.AddrPort
	Peers          []netip.AddrPort
	KeyFile        string
	Key            []byte // nil only when Insecure
	Cluster        string
	Insecure       bool
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	SuspicionMult  int
	GossipInterval time.Duration
}

// VIP is one shared address.
type VIP struct {
	Name      string
	Address   netip.Addr
	Interface string
}

// APIConfig configures the local API.
type APIConfig struct {
	Socket string
}

// The raw layer: decoded strictly from TOML, pointers mean "not set".
type rawConfig struct {
	Node struct {
		Name *string `toml:"name"`
	} `toml:"node"`
	Gossip struct {
		Bind           *string  `toml:"bind"`
		Peers          []string `toml:"peers"`
		KeyFile        *string  `toml:"key_file"`
		Cluster        *string  `toml:"cluster"`
		Insecure       *bool    `toml:"insecure"`
		ProbeInterval  *string  `toml:"probe_interval"`
		ProbeTimeout   *string  `toml:"probe_timeout"`
		SuspicionMult  *int     `toml:"suspicion_mult"`
		GossipInterval *string  `toml:"gossip_interval"`
	} `toml:"gossip"`
	VIPs []struct {
		Name      *string `toml:"name"`
		Address   *string `toml:"address"`
		Interface *string `toml:"interface"`
	} `toml:"vip"`
	API struct {
		Socket *string `toml:"socket"`
	} `toml:"api"`
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
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&raw)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s:%d: %s", path, pe.Position.Line, pe.Message)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
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

// line finds where key is set in table (the index-th one for an array of
// tables such as [[vip]]), or the table's header if the key is not set, or 0.
func (c *checker) line(table string, index int, key string) int {
	current, seen, header := "", -1, 0
	for i, l := range c.lines {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "[["):
			current = strings.TrimSpace(strings.Trim(strings.SplitN(l, "#", 2)[0], "[] \t"))
			if current == table {
				seen++
				if seen == index {
					header = i + 1
				}
			}
			continue
		case strings.HasPrefix(l, "["):
			current = strings.TrimSpace(strings.Trim(strings.SplitN(l, "#", 2)[0], "[] \t"))
			if current == table && index == 0 {
				header = i + 1
			}
			continue
		}
		if current != table || (seen != index && seen >= 0) {
			continue
		}
		if k, _, ok := strings.Cut(l, "="); ok && strings.TrimSpace(k) == key {
			return i + 1
		}
	}
	return header
}

// lineOfKey finds an unknown key reported by the decoder.
func (c *checker) lineOfKey(k toml.Key) int {
	if len(k) == 1 {
		return c.line("", 0, k[0])
	}
	table := strings.Join(k[:len(k)-1], ".")
	for i := 0; ; i++ {
		l := c.line(table, i, k[len(k)-1])
		if l == 0 || strings.Contains(c.lines[l-1], "=") || i > 1000 {
			return l
		}
	}
}

func (c *checker) duration(s *string, def time.Duration, key string) time.Duration {
	if s == nil {
		return def
	}
	d, err := time.ParseDuration(*s)
	if err != nil || d <= 0 {
		c.errAt(c.line("gossip", 0, key), "gossip.%s: %q is not a positive duration such as \"200ms\"", key, *s)
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

func (c *checker) check(raw *rawConfig) *Config {
	cfg := &Config{Path: c.path}

	// [node]
	if raw.Node.Name != nil {
		cfg.Node.Name = *raw.Node.Name
	} else if h, err := os.Hostname(); err == nil {
		cfg.Node.Name = h
	}
	if n := cfg.Node.Name; n == "" || len(n) > 128 || strings.ContainsAny(n, " \t\n") {
		c.errAt(c.line("node", 0, "name"), "node.name %q must be 1 to 128 characters without spaces", n)
	}

	// [gossip]
	g := &raw.Gossip
	if g.Bind == nil {
		c.errAt(c.line("gossip", 0, "bind"), "gossip.bind is required (IP:port memberlist listens on)")
	} else if ap, err := addrPort(*g.Bind); err != nil {
		c.errAt(c.line("gossip", 0, "bind"), "gossip.bind: %v", err)
	} else if ap.Addr().IsUnspecified() || ap.Port() == 0 {
		c.errAt(c.line("gossip", 0, "bind"), "gossip.bind %q: need a specific address and port, the one peers reach", *g.Bind)
	} else {
		cfg.Gossip.Bind = ap
	}
	for _, p := range g.Peers {
		ap, err := addrPort(p)
		if err != nil {
			c.errAt(c.line("gossip", 0, "peers"), "gossip.peers: %v", err)
			continue
		}
		cfg.Gossip.Peers = append(cfg.Gossip.Peers, ap)
	}
	cfg.Gossip.Cluster = DefaultCluster
	if g.Cluster != nil {
		cfg.Gossip.Cluster = *g.Cluster
		if l := len(*g.Cluster); l == 0 || l > 255 {
			c.errAt(c.line("gossip", 0, "cluster"), "gossip.cluster must be 1 to 255 bytes")
		}
	}
	if g.Insecure != nil {
		cfg.Gossip.Insecure = *g.Insecure
	}
	switch {
	case g.KeyFile != nil:
		cfg.Gossip.KeyFile = *g.KeyFile
		if !filepath.IsAbs(cfg.Gossip.KeyFile) {
			cfg.Gossip.KeyFile = filepath.Join(filepath.Dir(c.path), cfg.Gossip.KeyFile)
		}
		key, err := ReadKey(cfg.Gossip.KeyFile)
		if err != nil {
			c.errAt(c.line("gossip", 0, "key_file"), "gossip.key_file: %v", err)
		}
		cfg.Gossip.Key = key
	case !cfg.Gossip.Insecure:
		c.errAt(c.line("gossip", 0, "key_file"), "gossip.key_file is required (make one with `arpshare keygen`), or set insecure = true")
	}
	cfg.Gossip.ProbeInterval = c.duration(g.ProbeInterval, DefaultProbeInterval, "probe_interval")
	cfg.Gossip.ProbeTimeout = c.duration(g.ProbeTimeout, DefaultProbeTimeout, "probe_timeout")
	cfg.Gossip.GossipInterval = c.duration(g.GossipInterval, DefaultGossipInterval, "gossip_interval")
	if cfg.Gossip.ProbeTimeout >= cfg.Gossip.ProbeInterval {
		c.errAt(c.line("gossip", 0, "probe_timeout"), "gossip.probe_timeout (%s) must be shorter than probe_interval (%s)", cfg.Gossip.ProbeTimeout, cfg.Gossip.ProbeInterval)
	}
	cfg.Gossip.SuspicionMult = DefaultSuspicionMult
	if g.SuspicionMult != nil {
		cfg.Gossip.SuspicionMult = *g.SuspicionMult
		if *g.SuspicionMult < 1 || *g.SuspicionMult > 100 {
			c.errAt(c.line("gossip", 0, "suspicion_mult"), "gossip.suspicion_mult must be 1 to 100")
		}
	}

	// [[vip]]
	if len(raw.VIPs) == 0 {
		c.errAt(0, "no [[vip]]: nothing to share")
	}
	names, addrs := map[string]int{}, map[netip.Addr]string{}
	for i, rv := range raw.VIPs {
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
		switch {
		case rv.Address == nil:
			c.errAt(c.line("vip", i, "address"), "%s: address is required", where)
		default:
			a, err := netip.ParseAddr(*rv.Address)
			switch {
			case err != nil:
				c.errAt(c.line("vip", i, "address"), "%s: address %q is not an IP address", where, *rv.Address)
			case !a.Is4():
				c.errAt(c.line("vip", i, "address"), "%s: address %s: only IPv4 VIPs are supported", where, a)
			case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
				c.errAt(c.line("vip", i, "address"), "%s: address %s cannot be shared", where, a)
			default:
				if other, dup := addrs[a]; dup {
					c.errAt(c.line("vip", i, "address"), "%s: address %s is also vip %q", where, a, other)
				}
				addrs[a] = v.Name
				v.Address = a
			}
		}
		switch {
		case rv.Interface == nil || *rv.Interface == "":
			c.errAt(c.line("vip", i, "interface"), "%s: interface is required", where)
		case *rv.Interface == "lo":
			c.errAt(c.line("vip", i, "interface"), "%s: interface lo: the VIP is served on the interface clients reach", where)
		case len(*rv.Interface) > 15 || strings.ContainsAny(*rv.Interface, "/ \t"):
			c.errAt(c.line("vip", i, "interface"), "%s: interface %q is not a valid interface name", where, *rv.Interface)
		default:
			v.Interface = *rv.Interface
		}
		cfg.VIPs = append(cfg.VIPs, v)
	}
	// The metadata must fit with every VIP healthy and every interface's MAC.
	full := cfg.Meta(false)
	for range cfg.Interfaces() {
		full.MACs = append(full.MACs, "00:00:00:00:00:00")
	}
	if _, err := full.Encode(); err != nil {
		c.errAt(0, "%v", err)
	}

	// [api]
	cfg.API.Socket = DefaultSocket
	if raw.API.Socket != nil {
		cfg.API.Socket = *raw.API.Socket
		if !filepath.IsAbs(cfg.API.Socket) {
			c.errAt(c.line("api", 0, "socket"), "api.socket %q must be an absolute path", cfg.API.Socket)
		}
	}
	return cfg
}

// Meta is the gossip metadata of this host with every VIP ready.
func (cfg *Config) Meta(draining bool) gossip.Meta {
	m := gossip.Meta{Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: 1, Draining: draining}
	for _, v := range cfg.VIPs {
		m.VIPs = append(m.VIPs, v.Address)
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

// ReadKey reads a gossip key written by `arpshare keygen`.
func ReadKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("%s: not base64 (make one with `arpshare keygen`)", path)
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("%s: key is %d bytes, want 16, 24 or 32 (AES-128, -192 or -256)", path, len(key))
}
