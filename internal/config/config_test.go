package config

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/internal/bpf/handover"
)

func writeKey(t *testing.T, dir string, n int) string {
	t.Helper()
	p := filepath.Join(dir, "gossip.key")
	if err := os.WriteFile(p, []byte(base64.StdEncoding.EncodeToString(make([]byte, n))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReferenceConfig(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../../examples/arpshare.toml")
	if err != nil {
		t.Fatal(err)
	}
	key := writeKey(t, t.TempDir(), 32)
	data = []byte(strings.ReplaceAll(string(data), "/etc/arpshare/gossip.key", key))
	cfg, err := ParseConfig("arpshare.toml", data)
	if err != nil {
		t.Fatalf("reference config: %v", err)
	}
	want := &Config{
		Path: "arpshare.toml",
		Node: NodeConfig{Name: "h1", Weight: 1, StateDir: DefaultStateDir, MaxClients: DefaultMaxClients, RepointRate: 5000, ReassertInterval: time.Minute, ReassertRate: 5, FastPath: FastPathAuto},
		Gossip: GossipConfig{
			Bind: netip.MustParseAddrPort("198.18.0.11:7946"),
			Peers: []netip.AddrPort{
				netip.MustParseAddrPort("198.18.0.11:7946"),
				netip.MustParseAddrPort("198.18.0.12:7946"),
				netip.MustParseAddrPort("198.18.0.13:7946"),
			},
			KeyFile: key, Keys: [][]byte{make([]byte, 32)}, Cluster: "prod",
			ProbeInterval: DefaultProbeInterval, ProbeTimeout: DefaultProbeTimeout,
			SuspicionMult: DefaultSuspicionMult, GossipInterval: DefaultGossipInterval, Expect: 3,
		},
		VIPs: []VIP{{Name: "web", Address: netip.MustParseAddr("198.18.0.200"), Interface: "eth0", Mode: policy.Hash,
			Check: &Check{TCP: "127.0.0.1:8080", Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 2, Fall: 2}}},
		API:      APIConfig{Socket: DefaultSocket, Metrics: "127.0.0.1:9947"},
		Handover: handover.DefaultConfig(),
	}
	if diff := cmp.Diff(want, cfg, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
		cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := ParseConfig("/x/a.toml", []byte(`
[gossip]
bind = "198.18.0.11"
insecure = true
[[vip]]
name = "web"
address = "198.18.0.200"
interface = "eth0"
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err := ParseConfig("/x/b.toml", []byte("[gossip]\nbind = \"198.18.0.11\"\ninsecure = true\n[[vip]]\nname = \"v6\"\naddress = \"fd00::200\"\ninterface = \"eth0\"\n")); err != nil || !cfg.VIPs[0].Address.Is6() {
		t.Errorf("IPv6 VIP: %v", err)
	}
	if len(cfg.Warnings) != 2 || !strings.Contains(cfg.Warnings[0], "gossip.expect is not set") || !strings.Contains(cfg.Warnings[1], "gossip.peers names no host but this one") {
		t.Errorf("warnings = %q, want one about gossip.expect and one about gossip.peers", cfg.Warnings)
	}
	withPeers, err := ParseConfig("/x/c.toml", []byte("[gossip]\nbind = \"198.18.0.11\"\npeers = [\"198.18.0.11\", \"198.18.0.12\"]\nexpect = 2\ninsecure = true\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.200\"\ninterface = \"eth0\"\n"))
	if err != nil || len(withPeers.Warnings) != 0 {
		t.Errorf("a config with peers and expect: %v, warnings %q", err, withPeers.Warnings)
	}
	host, _ := os.Hostname()
	if cfg.Node.Name != host || cfg.Gossip.Cluster != "arpshare" || cfg.API.Socket != DefaultSocket ||
		cfg.Gossip.Bind.Port() != 7946 || cfg.Gossip.Keys != nil || cfg.Gossip.ProbeInterval != DefaultProbeInterval {
		t.Errorf("defaults not applied: %+v", cfg)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	goodKey := writeKey(t, dir, 32)
	shortKey := filepath.Join(dir, "short.key")
	os.WriteFile(shortKey, []byte(base64.StdEncoding.EncodeToString(make([]byte, 7))), 0o600)

	head := "[gossip]\nbind = \"198.18.0.11:7946\"\nkey_file = \"" + goodKey + "\"\n"
	vip := "[[vip]]\nname = \"web\"\naddress = \"198.18.0.200\"\ninterface = \"eth0\"\n"
	tests := []struct {
		name string
		data string
		want []string // each must appear in the error
	}{
		{"syntax", "[gossip\n", []string{"f.toml:2: expected"}},
		{"unknown key", head + "colour = \"red\"\n" + vip, []string{`f.toml:4: unknown key "gossip.colour"`}},
		{"unknown key in second vip", head + vip + vip[:0] + "[[vip]]\nname = \"b\"\naddress = \"198.18.0.201\"\ninterface = \"eth0\"\nport = 80\n",
			[]string{`f.toml:12: unknown key "vip.port"`}},
		{"bad address", head + "[[vip]]\nname = \"web\"\naddress = \"198.18.0.300\"\ninterface = \"eth0\"\n",
			[]string{`f.toml:6: vip "web": address "198.18.0.300" is not an IP address`}},
		{"duplicates", head + vip + vip, []string{`f.toml:9: vip "web": name used twice`, `f.toml:10: vip "web": address 198.18.0.200 is also vip "web"`}},
		{"missing key file", "[gossip]\nbind = \"198.18.0.11:7946\"\nkey_file = \"/nonexistent/k\"\n" + vip,
			[]string{"f.toml:3: gossip.key_file: open /nonexistent/k: no such file or directory"}},
		{"short key", "[gossip]\nbind = \"198.18.0.11:7946\"\nkey_file = \"" + shortKey + "\"\n" + vip,
			[]string{"short.key:1: key is 7 bytes, want 16, 24 or 32"}},
		{"no key", "[gossip]\nbind = \"198.18.0.11:7946\"\n" + vip, []string{"f.toml:1: gossip.key_file is required"}},
		{"no bind", "[gossip]\ninsecure = true\n" + vip, []string{"f.toml:1: gossip.bind is required"}},
		{"no vips", head, []string{"f.toml: no [[vip]]"}},
		{"bad handover grace", head + vip + "[handover]\nenabled = false\ngrace = \"ten minutes\"\n",
			[]string{`f.toml:10: handover.grace: "ten minutes" is not a positive duration`}},
		{"ipv6 link-local", head + "[[vip]]\nname = \"web\"\naddress = \"fe80::1\"\ninterface = \"eth0\"\n", []string{`f.toml:6: vip "web": address fe80::1 is link-local`}},
		{"ipv6 multicast", head + "[[vip]]\nname = \"web\"\naddress = \"ff02::1\"\ninterface = \"eth0\"\n", []string{`f.toml:6: vip "web": address ff02::1 cannot be shared`}},
		{"ipv6 zone", head + "[[vip]]\nname = \"web\"\naddress = \"fd00::1%eth0\"\ninterface = \"eth0\"\n", []string{`without a zone`}},
		{"lo", head + "[[vip]]\nname = \"web\"\naddress = \"198.18.0.200\"\ninterface = \"lo\"\n", []string{`f.toml:7: vip "web": interface lo`}},
		{"bad duration", head + "probe_interval = \"soon\"\n" + vip, []string{`f.toml:4: gossip.probe_interval: "soon"`}},
		{"timeout not below interval", head + "probe_timeout = \"1s\"\n" + vip, []string{"f.toml:4: gossip.probe_timeout (1s) must be shorter"}},
		{"wrong type", head + "suspicion_mult = \"three\"\n" + vip, []string{"f.toml:", "suspicion_mult"}},
		{"weight", head + "[node]\nweight = 0\n" + vip, []string{"f.toml:5: node.weight 0: must be 1 to 100"}},
		{"max clients", head + "[node]\nmax_clients = 10\n" + vip, []string{"f.toml:5: node.max_clients 10: must be 256 to 10000000"}},
		{"repoint rate", head + "[node]\nrepoint_rate = 0\n" + vip, []string{"f.toml:5: node.repoint_rate 0: must be 1 to 1000000"}},
		{"stop wait", head + "[handover]\nstop_wait = \"36s\"\n" + vip, []string{"f.toml:5: handover.stop_wait 36s: with the 10s a graceful stop takes besides (drain, leave), it exceeds the unit's TimeoutStopSec=45s, after which systemd kills the daemon with the VIPs left on lo and no leave: at most 35s"}},
		{"reassert rate", head + "[node]\nreassert_rate = 0\n" + vip, []string{"f.toml:5: node.reassert_rate 0: must be 1 to 1000000"}},
		{"reassert interval", head + "[node]\nreassert_interval = \"often\"\n" + vip, []string{"f.toml:5: node.reassert_interval"}},
		{"fast path", head + "[node]\nfast_path = \"yes\"\n" + vip, []string{`f.toml:5: node.fast_path "yes": must be "auto", "on" or "off"`}},
		{"expect", head + "expect = 0\n" + vip, []string{"f.toml:4: gossip.expect 0"}},
		{"mode", head + vip + "mode = \"random\"\n", []string{`f.toml:8: vip "web": mode "random"`}},
		{"two checks", head + vip + "[vip.check]\ntcp = \"127.0.0.1:80\"\nhttp = \"http://x/\"\n", []string{`f.toml:9: vip "web": check needs exactly one`}},
		{"no check kind", head + vip + "[vip.check]\nrise = 3\n", []string{`f.toml:8: vip "web": check needs exactly one`}},
		{"bad tcp check", head + vip + "[vip.check]\ntcp = \"localhost\"\n", []string{`f.toml:9: vip "web": check.tcp "localhost"`}},
		{"bad http check", head + vip + "[vip.check]\nhttp = \"ftp://x/\"\n", []string{`f.toml:9: vip "web": check.http`}},
		{"relative exec", head + vip + "[vip.check]\nexec = [\"check-web\"]\n", []string{`f.toml:9: vip "web": check.exec must start with an absolute path`}},
		{"check timeout", head + vip + "[vip.check]\ntcp = \"127.0.0.1:80\"\ninterval = \"1s\"\ntimeout = \"2s\"\n", []string{`f.toml:11: vip "web": check.timeout (2s) must not exceed`}},
		{"check rise", head + vip + "[vip.check]\ntcp = \"127.0.0.1:80\"\nrise = 0\n", []string{`f.toml:10: vip "web": check.rise 0`}},
		{"second vip's check", head + vip + "[[vip]]\nname = \"db\"\naddress = \"198.18.0.201\"\ninterface = \"eth0\"\n[vip.check]\ntcp = \"127.0.0.1:80\"\nfall = 0\ncolour = 1\n",
			[]string{`f.toml:14: vip "db": check.fall 0`, `f.toml:15: unknown key "vip.check.colour"`}},
		{"every error at once", "[gossip]\n[[vip]]\nname = \"\"\n", []string{"gossip.bind is required", "gossip.key_file is required", "vip #1: name is required", "address is required", "interface is required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseConfig("f.toml", []byte(tt.data))
			if err == nil {
				t.Fatal("config accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestConfigTooManyVIPs(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("[gossip]\nbind = \"198.18.0.11:7946\"\ninsecure = true\n")
	for i := range 40 {
		fmt.Fprintf(&b, "[[vip]]\nname = \"v%d\"\naddress = \"198.18.1.%d\"\ninterface = \"eth0\"\n", i, i+1)
	}
	if _, err := ParseConfig("f.toml", []byte(b.String())); err == nil || !strings.Contains(err.Error(), "metadata") {
		t.Errorf("40 VIPs: err = %v, want a metadata size error", err)
	}
}

// TestConfigErrorLines checks that every kind of error names the line of
// the key, whether the key is set plainly, dotted or in an inline table.
func TestConfigErrorLines(t *testing.T) {
	t.Parallel()
	head := "[gossip]\nbind = \"198.18.0.11\"\ninsecure = true\n"                        // lines 1-3
	vip := "[[vip]]\nname = \"web\"\naddress = \"198.18.0.200\"\ninterface = \"eth0\"\n" // lines 4-7
	for _, tt := range []struct{ config, want string }{
		// Type errors, which the TOML decoder reports without the file.
		{head + vip + "[node]\nweight = \"x\"\n", "a.toml:9: node.weight: a string where an integer belongs"},
		{"node.weight = \"x\"\n" + head + vip, "a.toml:1: node.weight: a string where an integer belongs"},
		{head + vip + "check = { tcp = \"127.0.0.1:80\", rise = \"2\" }\n", "a.toml:8: vip.check.rise: a string where an integer belongs"},
		{head + vip + "[[vip]]\nname = 7\n", "a.toml:9: vip.name: an integer where a string belongs"},
		{"[gossip]\npeers = [1]\n", "a.toml:2: gossip.peers: an integer where a string belongs"},
		{head + "expect = true\n" + vip, "a.toml:4: gossip.expect: a boolean (true or false) where an integer belongs"},
		{"[gossip]\npeers = \"198.18.0.12\"\n", "a.toml:2: gossip.peers: a string where a list belongs"},
		{head + vip + "[node]\nweight = 1.5\n", "a.toml:9: node.weight: a number where an integer belongs"},
		// Syntax errors, from the decoder's position too.
		{head + vip + "name = \n", "a.toml:8: "},
		// Unknown keys.
		{head + vip + "check = { tcp = \"127.0.0.1:80\", rsie = 2 }\n", `a.toml:8: unknown key "vip.check.rsie"`},
		{"node.wieght = 2\n" + head + vip, `a.toml:1: unknown key "node.wieght"`},
		{head + vip + "check.tpc = \"127.0.0.1:80\"\n", `a.toml:8: unknown key "vip.check.tpc"`},
		// Checks of values.
		{head + vip + "check = { tcp = \"nope\" }\n", `a.toml:8: vip "web": check.tcp "nope" is not host:port`},
		{head + vip + "check.rise = 0\ncheck.tcp = \"127.0.0.1:80\"\n", `a.toml:8: vip "web": check.rise 0: must be 1 to 100`},
		{head + vip + "[[vip]]\nname = \"db\"\naddress = \"198.18.0.201\"\ninterface = \"eth0\"\ncheck = { tcp = \"127.0.0.1:80\", timeout = \"1h\" }\n",
			`a.toml:12: vip "db": check.timeout (1h0m0s) must not exceed check.interval (1s)`},
		{"gossip = { bind = \"198.18.0.11\", insecure = true, expect = 0 }\n" + vip, "a.toml:1: gossip.expect 0: must be at least 1"},
	} {
		_, err := ParseConfig("a.toml", []byte(tt.config))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("config:\n%s\nerror %v, want %q", tt.config, err, tt.want)
		}
	}
}

func TestExpectMoreThanPeers(t *testing.T) {
	t.Parallel()
	base := "[gossip]\nbind = \"198.18.0.11\"\ninsecure = true\npeers = [\"198.18.0.11\", \"198.18.0.12\"]\nexpect = %d\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.200\"\ninterface = \"eth0\"\n"
	for expect, warn := range map[int]bool{2: false, 3: true} {
		cfg, err := ParseConfig("a.toml", []byte(fmt.Sprintf(base, expect)))
		if err != nil {
			t.Fatal(err)
		}
		got := slices.ContainsFunc(cfg.Warnings, func(w string) bool {
			return strings.Contains(w, "is more than the 2 hosts gossip.bind and gossip.peers name")
		})
		if got != warn {
			t.Errorf("expect = %d: warnings %q", expect, cfg.Warnings)
		}
	}
}
