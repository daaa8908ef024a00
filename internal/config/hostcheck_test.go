package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckHost(t *testing.T) {
	t.Parallel()
	// A port this process holds, on an address of this host.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	free, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freePort := free.LocalAddr().(*net.UDPAddr).Port
	free.Close()

	dir := t.TempDir()
	safe := writeKey(t, dir, 32)
	os.Chmod(safe, 0o640)
	open := dir + "/open.key"
	os.WriteFile(open, []byte("x\n"), 0o644)
	script := []byte("#!/bin/sh\nexit 0\n")
	goodCheck, openCheck := dir+"/check", dir+"/open-check"
	os.WriteFile(goodCheck, script, 0o755)
	os.WriteFile(openCheck, script, 0o755)
	os.Chmod(openCheck, 0o757)
	openDir := dir + "/open"
	os.Mkdir(openDir, 0o755)
	os.Chmod(openDir, 0o777)
	os.WriteFile(openDir+"/check", script, 0o755)
	execVIP := func(path string) []VIP {
		return []VIP{{Name: "web", Interface: "lo", Check: &Check{Exec: []string{path, "--quick"}}}}
	}

	for _, tt := range []struct {
		name    string
		cfg     Config
		errors  []string
		warning []string
	}{
		{
			name: "good",
			cfg: Config{Gossip: GossipConfig{Bind: netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", freePort)), KeyFile: safe},
				VIPs: []VIP{{Name: "web", Interface: "lo"}}},
		},
		{
			name:   "missing interface",
			cfg:    Config{VIPs: []VIP{{Name: "web", Interface: "nosuch9"}}},
			errors: []string{`vip "web": interface nosuch9 does not exist on this host (it has `},
		},
		{
			name:    "missing interface that may appear later",
			cfg:     Config{VIPs: []VIP{{Name: "web", Interface: "nosuch9", WaitForInterface: true}}},
			warning: []string{`vip "web": interface nosuch9 does not exist yet: the daemon starts and waits for it (wait_for_interface = true)`},
		},
		{
			name:   "bind elsewhere",
			cfg:    Config{Gossip: GossipConfig{Bind: netip.MustParseAddrPort("198.51.100.7:7946")}},
			errors: []string{"gossip.bind 198.51.100.7 is not an address of this host"},
		},
		{
			name: "port taken",
			cfg:  Config{Gossip: GossipConfig{Bind: netip.MustParseAddrPort(held.Addr().String())}},
			errors: []string{fmt.Sprintf("gossip.bind %s: the port is taken by config.test (pid %d); Docker Swarm, Serf, Consul and MetalLB speakers also use 7946",
				held.Addr(), os.Getpid())},
		},
		{
			name:   "key readable by all",
			cfg:    Config{Gossip: GossipConfig{KeyFile: open}},
			errors: []string{"gossip.key_file " + open + " has mode 0644: other users can read or change the key; chmod 0640"},
		},
		{name: "exec check", cfg: Config{VIPs: execVIP(goodCheck)}},
		{
			name:   "exec check others can write",
			cfg:    Config{VIPs: execVIP(openCheck)},
			errors: []string{`vip "web": check.exec ` + openCheck + " is writable by group or others (mode 0757): they could change what the daemon runs; chmod go-w " + openCheck},
		},
		{
			name:   "exec check in a folder others can write",
			cfg:    Config{VIPs: execVIP(openDir + "/check")},
			errors: []string{`vip "web": check.exec ` + openDir + "/check is in " + openDir + ", which is writable by group or others (mode 0777): they could change what the daemon runs; chmod go-w " + openDir},
		},
		{
			name:   "exec check missing",
			cfg:    Config{VIPs: execVIP(dir + "/nosuch")},
			errors: []string{`vip "web": check.exec ` + dir + "/nosuch cannot be run: "},
		},
	} {
		var errs, warns []string
		for _, f := range tt.cfg.CheckHost() {
			if f.Error {
				errs = append(errs, f.Message)
			} else {
				warns = append(warns, f.Message)
			}
		}
		for _, c := range []struct {
			what      string
			got, want []string
		}{{"errors", errs, tt.errors}, {"warnings", warns, tt.warning}} {
			if len(c.got) != len(c.want) {
				t.Errorf("%s: %s %q, want %q", tt.name, c.what, c.got, c.want)
				continue
			}
			for i := range c.want {
				if !strings.Contains(c.got[i], c.want[i]) {
					t.Errorf("%s: %s %q, want %q", tt.name, c.what, c.got[i], c.want[i])
				}
			}
		}
	}
}

func TestCheckKeyOwner(t *testing.T) {
	t.Parallel()
	if os.Getuid() != 0 {
		t.Skip("needs root to give a file away")
	}
	key := writeKey(t, t.TempDir(), 32)
	os.Chmod(key, 0o600)
	if err := os.Chown(key, 65534, 65534); errors.Is(err, os.ErrPermission) {
		t.Skip("needs CAP_CHOWN to give a file away")
	} else if err != nil {
		t.Fatal(err)
	}
	fs := checkKeyFile(key)
	if len(fs) == 0 || !fs[0].Error || !strings.Contains(fs[0].Message, "make it root's") {
		t.Errorf("key owned by nobody: %+v", fs)
	}
}

func TestCheckExecOwner(t *testing.T) {
	t.Parallel()
	if os.Getuid() != 0 {
		t.Skip("needs root to give a file away")
	}
	check := t.TempDir() + "/check"
	os.WriteFile(check, []byte("#!/bin/sh\nexit 0\n"), 0o755)
	if err := os.Chown(check, 54321, 54321); errors.Is(err, os.ErrPermission) {
		t.Skip("needs CAP_CHOWN to give a file away")
	} else if err != nil {
		t.Fatal(err)
	}
	fs := checkExecFile("web", check)
	want := `vip "web": check.exec ` + check + " is owned by user 54321, who could change what the daemon runs: chown root " + check
	if len(fs) != 1 || !fs[0].Error || fs[0].Message != want {
		t.Errorf("check owned by another user: %+v, want %q", fs, want)
	}
}

// TestCheckHostOwnDaemon: the gossip port held by this host's running
// daemon for this config (as the API socket tells) is a note, not an
// error; held by a daemon whose member is elsewhere, it is an error still.
func TestCheckHostOwnDaemon(t *testing.T) {
	t.Parallel()
	// This process plays the daemon: it holds the port, TCP and UDP, and
	// serves the API.
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	bind := netip.MustParseAddrPort(tcp.Addr().String())
	udp, err := net.ListenPacket("udp", bind.String())
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	for _, tt := range []struct {
		name   string
		member netip.AddrPort // the daemon's own gossip address, as its status says
		note   string
		errs   string
	}{
		{"own daemon", bind, fmt.Sprintf("gossip.bind %s: port %d is held by this host's running arpshare (pid %d, it answers on ", bind, bind.Port(), os.Getpid()), ""},
		{"a daemon bound elsewhere", netip.MustParseAddrPort("127.0.0.2:7946"), "", "the port is taken by config.test (pid"},
	} {
		socket := filepath.Join(t.TempDir(), "api.sock")
		l, err := net.Listen("unix", socket)
		if err != nil {
			t.Fatal(err)
		}
		status := map[string]any{"node": "h1", "members": []map[string]any{{"name": "h2", "address": bind}, {"name": "h1", "address": tt.member}}}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			json.NewEncoder(w).Encode(status)
		})}
		go srv.Serve(l)
		cfg := Config{Path: "/nonexistent.toml", Gossip: GossipConfig{Bind: bind}, API: APIConfig{Socket: socket}}
		var notes, errs []string
		for _, f := range cfg.CheckHost() {
			switch {
			case f.Error:
				errs = append(errs, f.Message)
			case f.Note:
				notes = append(notes, f.Message)
			}
		}
		srv.Close()
		if tt.note != "" && (len(notes) != 1 || !strings.HasPrefix(notes[0], tt.note) || len(errs) != 0) {
			t.Errorf("%s: notes %q, errors %q; want the note %q", tt.name, notes, errs, tt.note)
		}
		if tt.errs != "" && (len(errs) != 1 || !strings.Contains(errs[0], tt.errs) || len(notes) != 0) {
			t.Errorf("%s: notes %q, errors %q; want the error %q", tt.name, notes, errs, tt.errs)
		}
	}
}

// TestRunConfigArg: the config file of an `arpshare run` command line, as
// the flag package reads it.
func TestRunConfigArg(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		conf string
		ok   bool
	}{
		{[]string{"/usr/bin/arpshare", "run", "--config", "/etc/arpshare/arpshare.toml"}, "/etc/arpshare/arpshare.toml", true},
		{[]string{"arpshare", "run", "-config=a.toml", "--log-level", "debug"}, "a.toml", true},
		{[]string{"arpshare", "run", "--log-level", "debug"}, DefaultConfigPath, true},
		{[]string{"arpshare", "check", "--config", "a.toml"}, "", false},
		{[]string{"/usr/bin/serf", "agent"}, "", false},
		{[]string{"arpshare"}, "", false},
	} {
		conf, ok := runConfigArg(tt.args)
		if conf != tt.conf || ok != tt.ok {
			t.Errorf("%q: %q, %v; want %q, %v", tt.args, conf, ok, tt.conf, tt.ok)
		}
	}
}
