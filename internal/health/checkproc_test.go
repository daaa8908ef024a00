package health

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExecCheckUnprivileged runs an exec check that writes down what it
// got: only PATH of the daemon's environment, / as its directory,
// no_new_privs, and no capabilities in any set (as root too: its bounding
// set is dropped).
func TestExecCheckUnprivileged(t *testing.T) {
	for k, v := range map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1",
		"LISTEN_FDS": "1", "INVOCATION_ID": "0123", "CREDENTIALS_DIRECTORY": "/run/credentials/arpshare.service", "ARPSHARE_SECRET": "x"} {
		t.Setenv(k, v)
	}
	out := filepath.Join(t.TempDir(), "out")
	script := "{ env; echo cwd=$(pwd); grep -E '^(Cap|NoNewPrivs)' /proc/self/status; } > " + out
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := runCheck(ctx, []string{"/bin/sh", "-c", script}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	for _, bad := range []string{"NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_FDS", "INVOCATION_ID", "CREDENTIALS_DIRECTORY", "ARPSHARE_SECRET"} {
		if strings.Contains(got, bad) {
			t.Errorf("the check got %s from the daemon:\n%s", bad, got)
		}
	}
	want := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n", "cwd=/\n",
		"NoNewPrivs:\t1\n", "CapInh:\t0000000000000000\n", "CapAmb:\t0000000000000000\n",
		"CapPrm:\t0000000000000000\n", "CapEff:\t0000000000000000\n"}
	if os.Geteuid() == 0 {
		want = append(want, "CapBnd:\t0000000000000000\n")
	}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("the check's view lacks %q:\n%s", w, got)
		}
	}
}
