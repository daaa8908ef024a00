package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arpshare/arpshare/daemon"
)

func TestCommands(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var out, errb bytes.Buffer
	if code := run([]string{"keygen"}, &out, &errb); code != 0 {
		t.Fatalf("keygen exit %d: %s", code, errb.String())
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out.String()))
	if err != nil || len(key) != 32 || strings.Count(out.String(), "\n") != 1 {
		t.Fatalf("keygen printed %q: want 32 bytes of base64 on one line", out.String())
	}
	keyFile := filepath.Join(dir, "gossip.key")
	os.WriteFile(keyFile, out.Bytes(), 0o600)

	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte("[gossip]\nbind = \"198.18.0.11:7946\"\nkey_file = \"gossip.key\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.200\"\ninterface = \"eth0\"\n"), 0o600)
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[gossip]\nbind = \"nowhere\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.300\"\ninterface = \"eth0\"\n"), 0o600)

	tests := []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"check", "--config", good}, 0, "ok", "warning: gossip.expect is not set"},
		{[]string{"check", "--config", bad}, 1, "", "bad.toml:2: gossip.bind"},
		{[]string{"check", "--config", bad}, 1, "", `bad.toml:5: vip "web": address "198.18.0.300"`},
		{[]string{"check", "--config", filepath.Join(dir, "missing.toml")}, 1, "", "no such file"},
		{[]string{"version"}, 0, "arpshare dev", ""},
		{[]string{"status", "--socket", filepath.Join(dir, "none.sock")}, 1, "", "ask daemon at"},
		{[]string{"drain", "--socket", filepath.Join(dir, "none.sock")}, 1, "", "ask daemon at"},
		{[]string{"frobnicate"}, 2, "", "unknown command"},
		{[]string{"check", "extra"}, 2, "", "unexpected argument"},
		{nil, 2, "", "usage"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		code := run(tt.args, &out, &errb)
		if code != tt.code || !strings.Contains(out.String(), tt.out) || !strings.Contains(errb.String(), tt.err) {
			t.Errorf("arpshare %v: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
				tt.args, code, out.String(), errb.String(), tt.code, tt.out, tt.err)
		}
	}
}

// TestRepointLine: `arpshare status` says how long the round takes.
func TestRepointLine(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   daemon.RepointStatus
		want string
	}{
		{daemon.RepointStatus{Rate: 5000}, "re-pointing at 5000 packets/s: idle (since start: 0 clients answered, 0 did not)\n"},
		{daemon.RepointStatus{Rate: 10, Clients: 40, Packets: 113, Remaining: 11300 * time.Millisecond, Confirmed: 3, Unanswered: 1},
			"re-pointing at 10 packets/s: 40 clients, 113 packets left, about 11.3s at this rate (since start: 3 clients answered, 1 did not)\n"},
	} {
		if got := repointLine(tt.in); got != tt.want {
			t.Errorf("repointLine(%+v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
