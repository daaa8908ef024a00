package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/arpshare/arpshare/internal/api"
	"github.com/arpshare/arpshare/internal/propose"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Main(args, &out, &errb, Build{Version: "1.2.3", Commit: "abc"})
	return code, out.String(), errb.String()
}

func TestCommands(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	code, out, _ := runCLI("keygen")
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
	if code != 0 || err != nil || len(key) != 32 || strings.Count(out, "\n") != 1 {
		t.Fatalf("keygen printed %q (exit %d): want 32 bytes of base64 on one line", out, code)
	}
	keyFile := filepath.Join(dir, "gossip.key")
	os.WriteFile(keyFile, []byte(out), 0o600)

	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte("[gossip]\nbind = \"198.18.0.11:7946\"\nkey_file = \"gossip.key\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.200\"\ninterface = \"eth0\"\n[api]\nsocket = \""+dir+"/from-config.sock\"\n"), 0o600)
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[gossip]\nbind = \"nowhere\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.300\"\ninterface = \"eth0\"\n"), 0o600)
	none := filepath.Join(dir, "none.sock")

	tests := []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"check", "--offline", "--config", good}, 0, "ok", "warning: gossip.expect is not set"},
		{[]string{"check", "--config", bad}, 1, "", "bad.toml:2: gossip.bind"},
		{[]string{"check", "--config", bad}, 1, "", `bad.toml:5: vip "web": address "198.18.0.300"`},
		{[]string{"check", "--config", filepath.Join(dir, "missing.toml")}, 1, "", "no such file"},
		// Host checks: 198.18.0.11 is no address of this host.
		{[]string{"check", "--config", good}, 1, "", "gossip.bind 198.18.0.11 is not an address of this host"},
		{[]string{"version"}, 0, "arpshare 1.2.3 (commit abc, go1.", ""},
		{[]string{"--version"}, 0, "arpshare 1.2.3 (commit abc, go1.", ""},
		{[]string{"-version"}, 0, "arpshare 1.2.3", ""},
		{[]string{"--help"}, 0, "commands:\n  run ", ""},
		{[]string{"-h"}, 0, "commands:\n  run ", ""},
		{[]string{"help", "owner"}, 0, "usage: arpshare owner", ""},
		{[]string{"status", "--socket", none}, 3, "", "arpshare is not running (no socket at " + none + "); try: systemctl status arpshare"},
		{[]string{"drain", "--socket", none}, 3, "", "arpshare is not running"},
		{[]string{"clients", "--socket", none}, 3, "", "arpshare is not running"},
		{[]string{"owner", "--socket", none, "web", "198.18.0.1"}, 3, "", "arpshare is not running"},
		// The socket comes from the config when --socket is not given.
		{[]string{"status", "--config", good}, 3, "", "no socket at " + dir + "/from-config.sock)"},
		{[]string{"resume", "--config", good}, 3, "", "no socket at " + dir + "/from-config.sock)"},
		{[]string{"status", "--config", filepath.Join(dir, "missing.toml")}, 1, "", "no such file"},
		{[]string{"frobnicate"}, 2, "", "unknown command"},
		{[]string{"check", "extra"}, 2, "", `unexpected argument "extra"`},
		{[]string{"owner", "web"}, 2, "", "missing CLIENT"},
		{[]string{"keygen", "--vip", "x"}, 2, "", "flag provided but not defined: -vip"},
		{[]string{"check", "--socket", "x"}, 2, "", "flag provided but not defined: -socket"},
		{[]string{"run", "--log-level", "loud", "--config", good}, 2, "", `--log-level "loud"`},
		{nil, 2, "", "usage"},
	}
	for _, tt := range tests {
		code, out, errs := runCLI(tt.args...)
		if code != tt.code || !strings.Contains(out, tt.out) || !strings.Contains(errs, tt.err) {
			t.Errorf("arpshare %v: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
				tt.args, code, out, errs, tt.code, tt.out, tt.err)
		}
	}
}

// TestHelp checks that every command has its own help, exits 0 on -h and
// --help, and lists its own flags only.
func TestHelp(t *testing.T) {
	t.Parallel()
	all := map[string]bool{}
	for _, c := range commands {
		for _, f := range c.flags {
			all[f.name] = true
		}
	}
	for _, c := range commands {
		for _, h := range []string{"-h", "--help", "-help"} {
			code, out, errs := runCLI(c.name, h)
			if code != 0 || errs != "" || !strings.HasPrefix(out, "usage: arpshare "+c.name) || !strings.Contains(out, "examples:\n  arpshare") {
				t.Errorf("arpshare %s %s: exit %d, stdout %q, stderr %q", c.name, h, code, out, errs)
			}
			mine := map[string]bool{}
			for _, f := range c.flags {
				mine[f.name] = true
				if !strings.Contains(out, "  --"+f.name) {
					t.Errorf("arpshare %s %s does not list --%s", c.name, h, f.name)
				}
			}
			for name := range all {
				if !mine[name] && strings.Contains(out, "--"+name) {
					t.Errorf("arpshare %s %s lists --%s, which it does not take", c.name, h, name)
				}
			}
		}
	}
}

// fakeDaemon serves canned answers on a unix socket, as the daemon's API
// does, and returns the socket's path.
func fakeDaemon(t *testing.T, status api.Status) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	reply := func(v any) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(v) }
	}
	mux.Handle("GET /v1/status", reply(status))
	mux.Handle("POST /v1/drain", reply(status))
	mux.Handle("POST /v1/resume", reply(status))
	mux.Handle("GET /v1/clients", reply([]api.ClientStatus{{VIP: "web", MAC: "02:00:00:00:00:01", Owner: "h1"}}))
	mux.Handle("GET /v1/owner", reply(api.OwnerStatus{VIP: "web", Owner: "h1", Eligible: []string{"h1"}, Quorum: true}))
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return path
}

func TestStatusExitCode(t *testing.T) {
	t.Parallel()
	serving := api.Status{Node: "h1", Quorum: true, VIPs: []api.VIPStatus{{Name: "web", Answering: true, Healthy: true}}}
	notServing := serving
	notServing.Draining = true
	rejected := serving
	rejected.Join, rejected.JoinCause = "rejected", "no installed keys could decrypt the message"
	waiting := serving
	waiting.VIPs = []api.VIPStatus{{Name: "web", Interface: "eth0", Healthy: true}}
	for _, tt := range []struct {
		s    api.Status
		code int
		out  string
	}{
		{serving, ExitOK, "node h1 (serving)"},
		{notServing, ExitNotServing, "node h1 (NOT SERVING: draining"},
		{rejected, ExitNotServing, "node h1 (NOT SERVING: rejected by its peers: no installed keys could decrypt the message, rejected)"},
		{waiting, ExitNotServing, "node h1 (NOT SERVING: vip web: interface eth0 missing or down)"},
	} {
		tt.s.Explain()
		sock := fakeDaemon(t, tt.s)
		code, out, errs := runCLI("status", "--socket", sock)
		if code != tt.code || !strings.Contains(out, tt.out) {
			t.Errorf("status of %+v: exit %d, stdout %q, stderr %q; want exit %d and %q", tt.s, code, out, errs, tt.code, tt.out)
		}
		if code, _, _ := runCLI("status", "--json", "--socket", sock); code != tt.code {
			t.Errorf("status --json of %+v: exit %d, want %d", tt.s, code, tt.code)
		}
	}
}

// TestJSON runs every command that prints with --json and checks that it
// prints one JSON document.
func TestJSON(t *testing.T) {
	t.Parallel()
	s := api.Status{Node: "h1", Quorum: true}
	s.Explain()
	sock := fakeDaemon(t, s)
	config := filepath.Join(t.TempDir(), "a.toml")
	os.WriteFile(config, []byte("[gossip]\nbind = \"127.0.0.1:1\"\ninsecure = true\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.200\"\ninterface = \"eth0\"\n"), 0o600)
	printing := map[string][]string{
		"check":   {"--offline", "--config", config},
		"keygen":  nil,
		"status":  {"--socket", sock},
		"clients": {"--socket", sock},
		"owner":   {"--socket", sock, "web", "198.18.0.1"},
		"drain":   {"--socket", sock},
		"resume":  {"--socket", sock},
		"version": nil,
	}
	for _, c := range commands {
		args, ok := printing[c.name]
		if !ok {
			continue
		}
		delete(printing, c.name)
		code, out, errs := runCLI(append([]string{c.name, "--json"}, args...)...)
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil || code != 0 {
			t.Errorf("arpshare %s --json: exit %d, %v: stdout %q, stderr %q", c.name, code, err, out, errs)
		}
	}
	for name := range printing {
		t.Errorf("no command %s", name)
	}
}

// TestStatusFieldsDocumented checks that `status --json` shows readable
// names, each documented in arpshare(8), and none of gossip's wire keys.
func TestStatusFieldsDocumented(t *testing.T) {
	t.Parallel()
	documented := map[string]bool{}
	for _, f := range StatusFields {
		documented[f.Name] = true
	}
	var walk func(typ reflect.Type, prefix string)
	walk = func(typ reflect.Type, prefix string) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if len(name) < 2 {
				t.Errorf("%s%s: json name %q is not readable", prefix, f.Name, name)
			}
			if !documented[prefix+name] {
				t.Errorf("arpshare(8) does not document %s%s", prefix, name)
			}
			delete(documented, prefix+name)
			if el := f.Type; el.Kind() == reflect.Slice && el.Elem().Kind() == reflect.Struct && el.Elem().PkgPath() == typ.PkgPath() {
				walk(el.Elem(), prefix+name+"[].")
			}
		}
	}
	walk(reflect.TypeOf(api.Status{}), "")
	for name := range documented {
		t.Errorf("arpshare(8) documents %s, which status does not print", name)
	}
	b, _ := json.Marshal(api.Status{Members: []api.MemberStatus{{Name: "h1", Weight: 2}}})
	for _, wire := range []string{`"w"`, `"d"`, `"h"`, `"u"`, `"m"`, `"v"`, `"a"`, `"meta"`} {
		if bytes.Contains(b, []byte(wire+":")) {
			t.Errorf("status JSON has the gossip wire key %s: %s", wire, b)
		}
	}
}

// TestPermissionDenied runs `arpshare status` as nobody against a socket
// only root may use.
func TestPermissionDenied(t *testing.T) {
	if os.Getenv("ARPSHARE_CLI_HELPER") != "" {
		os.Exit(Main(strings.Fields(os.Getenv("ARPSHARE_CLI_HELPER")), os.Stdout, os.Stderr, Build{}))
	}
	// CAP_SETGID is bit 6, CAP_SETUID bit 7: root with its capabilities
	// dropped cannot become nobody.
	if os.Getuid() != 0 || !hasCap(t, 6) || !hasCap(t, 7) {
		if os.Getenv("ARPSHARE_REQUIRE_PRIVILEGED") != "" {
			t.Fatal("not root with CAP_SETUID and CAP_SETGID, and ARPSHARE_REQUIRE_PRIVILEGED is set")
		}
		t.Skip("needs root with CAP_SETUID and CAP_SETGID to run a command as nobody")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	os.Chmod(sock, 0o660)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "cli.test")
	if out, err := exec.Command("cp", self, bin).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	os.Chmod(bin, 0o755)
	cmd := exec.CommandContext(context.Background(), "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		bin, "-test.run=^TestPermissionDenied$")
	cmd.Env = append(os.Environ(), "ARPSHARE_CLI_HELPER=status --socket "+sock)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != ExitDenied ||
		!regexp.MustCompile(`permission denied on .*api\.sock: run this as root \(sudo\), or, to read status, join the arpshare-status group`).Match(out) {
		t.Errorf("status as nobody: %v: %s", err, out)
	}
}

// hasCap reports whether this process has capability bit in effect.
func hasCap(t *testing.T, bit uint) bool {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(status)) {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err != nil {
				t.Fatalf("CapEff %q: %v", hex, err)
			}
			return caps&(1<<bit) != 0
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return false
}

// TestStatusProposedRouters: with node.propose_routers, status lists each
// VIP's proposed routers as a routers line to copy, and says nothing
// without it.
func TestStatusProposedRouters(t *testing.T) {
	t.Parallel()
	s := api.Status{Node: "h1", Quorum: true, VIPs: []api.VIPStatus{{Name: "db", Answering: true, Healthy: true, ProposedRouters: []propose.Proposal{
		{Addresses: []netip.Addr{netip.MustParseAddr("198.18.0.254")}, MAC: "02:00:00:00:00:fe", Sources: 4},
		{MAC: "02:00:00:00:00:fd", Sources: 4},
	}}}}
	s.Explain()
	if _, out, _ := runCLI("status", "--socket", fakeDaemon(t, s)); strings.Contains(out, "router proposals") {
		t.Errorf("status shows proposals with node.propose_routers off:\n%s", out)
	}
	s.Proposals = propose.Status{Enabled: true, Interfaces: []string{"eth0"}, Segments: map[string]uint64{propose.Counted: 12}}
	_, out, _ := runCLI("status", "--socket", fakeDaemon(t, s))
	for _, want := range []string{
		"router proposals: watching eth0 (12 new connections counted)",
		`db: proposed router 02:00:00:00:00:fe: routers = ["198.18.0.254"]`,
		"db: proposed router 02:00:00:00:00:fd: address not known yet",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not say %q:\n%s", want, out)
		}
	}
}
