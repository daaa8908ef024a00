package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPostremovePurges: purging the deb, or erasing the rpm, removes the
// state folder (a reinstall must not start drained); a removal that keeps
// the configuration, or an upgrade, keeps it.
func TestPostremovePurges(t *testing.T) {
	// Not parallel: it writes programs and runs them, and a parallel
	// test's fork can hold the written file open ("text file busy").
	// The script's PATH: rm, and a systemctl that reloads nothing on the
	// machine that runs the test.
	bin := t.TempDir()
	rm, err := exec.LookPath("rm")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(rm, filepath.Join(bin, "rm")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		arg  string
		gone bool
	}{
		{"purge", true}, // deb: dpkg --purge
		{"0", true},     // rpm: erase
		{"remove", false},
		{"upgrade", false},
		{"1", false}, // rpm: upgrade
	} {
		root := t.TempDir()
		state := filepath.Join(root, "var/lib/arpshare")
		if err := os.MkdirAll(state, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(state, "drained"), []byte("drained\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", "scripts/postremove.sh", tt.arg)
		cmd.Env = append(os.Environ(), "DPKG_ROOT="+root, "PATH="+bin)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("postremove.sh %s: %v: %s", tt.arg, err, out)
		}
		_, err := os.Stat(state)
		if gone := os.IsNotExist(err); gone != tt.gone {
			t.Errorf("postremove.sh %s: state folder gone %v, want %v", tt.arg, gone, tt.gone)
		}
	}
}

// TestPrermDisables: removing the deb stops and disables the service;
// an upgrade (or a failed one) leaves it running and enabled.
func TestPrermDisables(t *testing.T) {
	// Not parallel: it writes programs and runs them, and a parallel
	// test's fork can hold the written file open ("text file busy").
	bin := t.TempDir()
	log := filepath.Join(bin, "calls")
	for _, tool := range []string{"systemctl", "deb-systemd-invoke"} {
		script := "#!/bin/sh\necho " + tool + " \"$@\" >> " + log + "\n"
		if err := os.WriteFile(filepath.Join(bin, tool), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		arg     string
		disable bool
	}{
		{"remove", true},
		{"upgrade", false},
		{"failed-upgrade", false},
		{"deconfigure", false},
	} {
		os.Remove(log)
		cmd := exec.Command("/bin/sh", "scripts/deb-prerm.sh", tt.arg)
		cmd.Env = append(os.Environ(), "PATH="+bin)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("deb-prerm.sh %s: %v: %s", tt.arg, err, out)
		}
		calls, _ := os.ReadFile(log)
		disabled := strings.Contains(string(calls), "systemctl --no-reload disable arpshare.service\n")
		if disabled != tt.disable {
			t.Errorf("deb-prerm.sh %s: disabled %v, want %v; calls:\n%s", tt.arg, disabled, tt.disable, calls)
		}
		if !tt.disable && len(calls) > 0 {
			t.Errorf("deb-prerm.sh %s touched the service:\n%s", tt.arg, calls)
		}
	}
}

// TestNeedrestartExcludes loads the needrestart snippet as needrestart
// does (an eval of each /etc/needrestart/conf.d/*.conf) and matches unit
// names against its override_rc as needrestart does: arpshare.service is
// not restarted (0), other units are left alone.
func TestNeedrestartExcludes(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("perl"); err != nil {
		t.Skip("perl not installed")
	}
	const probe = `our %nrconf = (override_rc => {});
eval do { local(@ARGV, $/) = shift; <> }; die "parse: $@" if $@;
for my $unit (@ARGV) {
	my $v = "unset";
	foreach my $re (keys %{$nrconf{override_rc}}) { $v = $nrconf{override_rc}->{$re} if $unit =~ /$re/ }
	print "$unit $v\n";
}`
	out, err := exec.Command("perl", "-we", probe, "needrestart.conf", "arpshare.service", "ssh.service", "arpshare-other.service").CombinedOutput()
	if err != nil {
		t.Fatalf("perl: %v: %s", err, out)
	}
	want := "arpshare.service 0\nssh.service unset\narpshare-other.service unset\n"
	if string(out) != want {
		t.Errorf("needrestart.conf: override_rc gives\n%s, want\n%s", out, want)
	}
}
