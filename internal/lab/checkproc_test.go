package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExecCheckUnprivileged runs a daemon as the unit does (not root, with
// CAP_NET_RAW, CAP_NET_ADMIN and CAP_BPF as ambient capabilities, and
// systemd's NOTIFY_SOCKET and WATCHDOG_USEC) with an exec health check that
// writes down what it runs with: no capability in any set, no_new_privs,
// and none of the daemon's environment.
func TestExecCheckUnprivileged(t *testing.T) {
	requirePrivileged(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv from util-linux")
	}
	l, err := New(Options{Hosts: 1, Clients: 1, Binary: build(t), User: 65534})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	h := l.Hosts[0]
	out := filepath.Join(l.Dir, h.Name+".check")
	cfg, err := os.ReadFile(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	script := "{ env; grep -E '^(Cap|NoNewPrivs)' /proc/self/status; } > " + out + ".new && mv " + out + ".new " + out
	check := fmt.Sprintf("interface = \"eth0\"\n[vip.check]\nexec = [\"/bin/sh\", \"-c\", %q]\ninterval = \"1s\"\n", script)
	edited := strings.Replace(string(cfg), "interface = \"eth0\"\n", check, 1)
	if edited == string(cfg) {
		t.Fatalf("no VIP to add a check to in:\n%s", cfg)
	}
	if err := os.WriteFile(h.Config, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if got, err = os.ReadFile(out); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the check never ran: %v", err)
		}
	}
	// The daemon has the capabilities the check must not get (CAP_NET_ADMIN
	// is bit 12, CAP_NET_RAW bit 13, CAP_BPF bit 39).
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.PID()))
	if err != nil || !strings.Contains(string(st), "CapAmb:\t0000008000003000\n") {
		t.Fatalf("the daemon's status (%v) lacks its ambient capabilities:\n%s", err, st)
	}
	for _, want := range []string{"CapInh:\t0000000000000000\n", "CapPrm:\t0000000000000000\n", "CapEff:\t0000000000000000\n",
		"CapAmb:\t0000000000000000\n", "NoNewPrivs:\t1\n", "PATH="} {
		if !strings.Contains(string(got), want) {
			t.Errorf("the check ran without %q:\n%s", want, got)
		}
	}
	for _, bad := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM"} {
		if strings.Contains(string(got), bad) {
			t.Errorf("the check got the daemon's %s:\n%s", bad, got)
		}
	}
}
