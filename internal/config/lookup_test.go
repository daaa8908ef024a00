package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arpshare/arpshare/arp/policy"
)

// TestFindVIP: a VIP is found by name or address, and one that is not
// there gets an error listing those that are.
func TestFindVIP(t *testing.T) {
	t.Parallel()
	cfg := &Config{VIPs: []VIP{{Name: "web", Address: netip.MustParseAddr("198.18.0.200"), Mode: policy.Race}}}
	for _, q := range []string{"web", "198.18.0.200"} {
		if v, ok := cfg.FindVIP(q); !ok || v.Name != "web" || v.Policy().Mode() != policy.Race {
			t.Errorf("FindVIP(%q) = %+v, %v", q, v, ok)
		}
	}
	if _, ok := cfg.FindVIP("db"); ok {
		t.Error("found db")
	}
	if err := cfg.NoVIP("db"); !strings.Contains(err.Error(), "VIPs: web (198.18.0.200)") {
		t.Errorf("NoVIP: %v", err)
	}
	if err := (&Config{}).NoVIP("db"); !strings.Contains(err.Error(), "this host has no VIP") {
		t.Errorf("NoVIP without VIPs: %v", err)
	}
}

// TestLoadAndSocket: LoadConfig reads a file and names it in its errors;
// SocketFromConfig reads only api.socket, defaulting it.
func TestLoadAndSocket(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "a.toml")
	if err := os.WriteFile(path, []byte("[node]\nweight = \"x\"\n[api]\nsocket = \"/run/x.sock\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); err == nil || !strings.HasPrefix(err.Error(), path+":2: node.weight") {
		t.Errorf("LoadConfig: %v", err)
	}
	if _, err := LoadConfig(filepath.Join(dir, "none.toml")); err == nil {
		t.Error("LoadConfig of a missing file: nil")
	}
	if s, err := SocketFromConfig(path); err != nil || s != "/run/x.sock" {
		t.Errorf("SocketFromConfig: %q, %v", s, err)
	}
	empty := filepath.Join(dir, "empty.toml")
	os.WriteFile(empty, nil, 0o644)
	if s, err := SocketFromConfig(empty); err != nil || s != DefaultSocket {
		t.Errorf("SocketFromConfig without api.socket: %q, %v", s, err)
	}
	if _, err := SocketFromConfig(filepath.Join(dir, "none.toml")); err == nil {
		t.Error("SocketFromConfig of a missing file: nil")
	}
}
