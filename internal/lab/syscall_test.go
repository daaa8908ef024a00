package lab

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// allowedSyscalls expands systemd's syscall groups, as
// `systemd-analyze syscall-filter` lists them, into system call names; a
// group written ~@name takes its calls away again, as a later
// SystemCallFilter=~@name line of the unit does.
func allowedSyscalls(t *testing.T, groups ...string) map[string]bool {
	t.Helper()
	out, err := exec.Command("systemd-analyze", "syscall-filter").Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter: %v", err)
	}
	members := map[string][]string{}
	var current string
	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(line, "@"):
			current = strings.TrimSpace(line)
		case strings.HasPrefix(line, "    ") && !strings.HasPrefix(strings.TrimSpace(line), "#") && current != "":
			members[current] = append(members[current], strings.TrimSpace(line))
		}
	}
	allowed := map[string]bool{}
	var expand func(g string, allow bool)
	expand = func(g string, allow bool) {
		for _, m := range members[g] {
			if strings.HasPrefix(m, "@") {
				expand(m, allow)
			} else {
				allowed[m] = allow
			}
		}
	}
	for _, g := range groups {
		name, allow := strings.TrimPrefix(g, "~"), !strings.HasPrefix(g, "~")
		if strings.HasPrefix(name, "@") {
			expand(name, allow)
		} else {
			allowed[name] = allow
		}
	}
	for name, ok := range allowed {
		if !ok {
			delete(allowed, name)
		}
	}
	if allowed["mount"] || allowed["reboot"] || allowed["kexec_load"] {
		t.Fatalf("%v allow mount, reboot or kexec_load: the listing was misread", groups)
	}
	if len(allowed) < 100 {
		t.Fatalf("only %d system calls in %v: %q", len(allowed), groups, out)
	}
	return allowed
}

// unitSyscallFilter reads the unit's SystemCallFilter= lines, in order: a
// line that starts with ~ takes its groups and calls away.
func unitSyscallFilter(t *testing.T) []string {
	t.Helper()
	unit, err := os.ReadFile("../../packaging/arpshare.service")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(unit), "\n") {
		v, ok := strings.CutPrefix(line, "SystemCallFilter=")
		if !ok {
			continue
		}
		deny := strings.HasPrefix(v, "~")
		for _, f := range strings.Fields(strings.TrimPrefix(v, "~")) {
			if deny {
				f = "~" + f
			}
			out = append(out, f)
		}
	}
	if len(out) < 2 || out[0] != "@system-service" {
		t.Fatalf("the unit's SystemCallFilter= lines read as %q", out)
	}
	return out
}

// TestSystemCallFilter runs a daemon under strace through what it does in
// production (serve both families, a health check, metrics, the API, drain,
// reload, graceful stop) and checks that every system call it made is in
// the unit's SystemCallFilter= lines (@system-service bpf, without
// @resources; with @default, which systemd always allows). The lab cannot run the unit
// itself: this is how the filter is known to fit.
func TestSystemCallFilter(t *testing.T) {
	requirePrivileged(t)
	for _, tool := range []string{"strace", "systemd-analyze"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed", tool)
		}
	}
	allowed := allowedSyscalls(t, append(unitSyscallFilter(t), "@default")...)
	l := newLab(t, 2, 3, HostConfig{IPv6VIP: true, Metrics: true, Check: true})
	h1 := l.Hosts[0]
	h1.Strace = h1.Log + ".strace"
	startAll(t, l.Hosts)
	assignment(t, l.Clients)
	assignmentTo(t, l.Clients, VIP6)
	if _, err := h1.Scrape(); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{{"status"}, {"clients"}, {"owner", "web", l.Clients[0].Addr.String()}, {"drain"}, {"resume"}} {
		if out, err := h1.Run(cmd...); err != nil && !strings.Contains(err.Error(), "exit status 5") {
			t.Fatalf("%v: %s", err, out)
		}
	}
	// The lab's process is strace: signal the daemon it runs.
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", h1.PID(), h1.PID()))
	daemonPID, err2 := strconv.Atoi(strings.TrimSpace(string(kids)))
	if err != nil || err2 != nil {
		t.Fatalf("the daemon under strace: %q: %v %v", kids, err, err2)
	}
	if err := syscall.Kill(daemonPID, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, h1, "config reloaded", 5*time.Second)
	if err := syscall.Kill(daemonPID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitLog(t, h1, "arpshare stopped", 10*time.Second)
	for deadline := time.Now().Add(10 * time.Second); h1.PID() != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("strace did not exit after the daemon")
		}
	}
	b, err := os.ReadFile(h1.Strace)
	if err != nil {
		t.Fatal(err)
	}
	var used, outside []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[0] == "%" || strings.HasPrefix(f[0], "-") || f[len(f)-1] == "total" {
			continue
		}
		name := f[len(f)-1]
		used = append(used, name)
		if !allowed[name] {
			outside = append(outside, name)
		}
	}
	if len(used) < 20 {
		t.Fatalf("strace saw only %d system calls: %s", len(used), b)
	}
	slices.Sort(outside)
	if len(outside) > 0 {
		t.Errorf("the daemon made system calls outside the unit's SystemCallFilter: %v\nstrace summary:\n%s", outside, b)
	}
	t.Logf("%d distinct system calls, all in the unit's SystemCallFilter", len(used))
}
