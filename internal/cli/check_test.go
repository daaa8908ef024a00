package cli

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckMissingInterface: `arpshare check` fails when a VIP's interface
// does not exist on this host (a config left with eth0 on a host whose NIC
// is enp1s0 would serve nothing), unless --offline or the VIP says with
// wait_for_interface that the interface is made later.
func TestCheckMissingInterface(t *testing.T) {
	t.Parallel()
	free, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := free.LocalAddr().(*net.UDPAddr).Port
	free.Close()
	dir := t.TempDir()
	config := func(name, extra string) string {
		path := filepath.Join(dir, name)
		toml := fmt.Sprintf("[gossip]\nbind = \"127.0.0.1:%d\"\ninsecure = true\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.200\"\ninterface = \"nosuch9\"\n%s", port, extra)
		if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	strict, later := config("strict.toml", ""), config("later.toml", "wait_for_interface = true\n")
	for _, tt := range []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"check", "--config", strict}, ExitFailure, "", `vip "web": interface nosuch9 does not exist on this host (it has `},
		{[]string{"check", "--config", strict, "--json"}, ExitFailure, `"ok": false`, ""},
		{[]string{"check", "--config", strict, "--offline"}, ExitOK, "ok", ""},
		{[]string{"check", "--config", later}, ExitOK, "ok", `warning: vip "web": interface nosuch9 does not exist yet: the daemon starts and waits for it (wait_for_interface = true)`},
	} {
		code, out, errs := runCLI(tt.args...)
		if code != tt.code || !strings.Contains(out, tt.out) || !strings.Contains(errs, tt.err) {
			t.Errorf("arpshare %q: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
				tt.args, code, out, errs, tt.code, tt.out, tt.err)
		}
	}
}
