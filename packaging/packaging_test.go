package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// requireTools skips without the packaging tools, unless
// ARPSHARE_REQUIRE_PRIVILEGED is set (as in CI): then it fails.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("ARPSHARE_REQUIRE_PRIVILEGED") != "" {
				t.Fatalf("%s not installed, and ARPSHARE_REQUIRE_PRIVILEGED is set", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func mustContain(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s: no %q in:\n%s", what, w, got)
		}
	}
}

func TestPackages(t *testing.T) {
	requireTools(t, "make", "dpkg-deb", "rpm", "systemd-analyze")
	dist := t.TempDir()
	run(t, "make", "-C", "..", "packages", "VERSION=1.2.3", "GOARCH=amd64", "DIST="+dist)
	deb := filepath.Join(dist, "arpshare_1.2.3_amd64.deb")
	rpm := filepath.Join(dist, "arpshare_1.2.3_amd64.rpm")

	t.Run("version", func(t *testing.T) {
		out := run(t, filepath.Join(dist, "arpshare-linux-amd64"), "version")
		if !regexp.MustCompile(`^arpshare 1\.2\.3 \(commit [0-9a-f]{7,}, go1\.\d+`).MatchString(out) {
			t.Errorf("arpshare version: %q", out)
		}
	})

	t.Run("deb", func(t *testing.T) {
		mustContain(t, "deb fields", run(t, "dpkg-deb", "-f", deb, "Package", "Version", "Architecture"),
			"Package: arpshare", "Version: 1.2.3", "Architecture: amd64")
		contents := run(t, "dpkg-deb", "-c", deb)
		for _, re := range []string{
			`-rwxr-xr-x root/root .* \./usr/bin/arpshare\n`,
			`-rw-r--r-- root/root .* \./lib/systemd/system/arpshare\.service\n`,
			`drwxr-x--- root/root .* \./etc/arpshare/\n`,
			`-rw-r----- root/root .* \./etc/arpshare/arpshare\.toml\n`,
		} {
			if !regexp.MustCompile(re).MatchString(contents) {
				t.Errorf("deb contents: no match for %s in:\n%s", re, contents)
			}
		}
		mustContain(t, "deb conffiles", run(t, "dpkg-deb", "-I", deb, "conffiles"), "/etc/arpshare/arpshare.toml")
		postinst := run(t, "dpkg-deb", "-I", deb, "postinst")
		mustContain(t, "deb postinst", postinst, "useradd --system", "chgrp arpshare /etc/arpshare")
		if regexp.MustCompile(`systemctl (start|enable|restart)`).MatchString(postinst) {
			t.Errorf("postinst starts or enables the service:\n%s", postinst)
		}
	})

	t.Run("rpm", func(t *testing.T) {
		mustContain(t, "rpm fields", run(t, "rpm", "-qp", "--qf", "%{NAME} %{VERSION} %{ARCH}\n", rpm), "arpshare 1.2.3 x86_64")
		mustContain(t, "rpm files", run(t, "rpm", "-qpl", rpm),
			"/usr/bin/arpshare\n", "/usr/lib/systemd/system/arpshare.service\n", "/etc/arpshare/arpshare.toml\n")
		// Flags "cn": a config file that upgrades never replace.
		mustContain(t, "rpm config flags", run(t, "rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:perms}\n]", rpm),
			"/etc/arpshare/arpshare.toml cn -rw-r-----", "/etc/arpshare  drwxr-x---")
		scripts := run(t, "rpm", "-qp", "--scripts", rpm)
		mustContain(t, "rpm scripts", scripts, "useradd --system")
		if regexp.MustCompile(`systemctl (start|enable|restart)`).MatchString(scripts) {
			t.Errorf("rpm scripts start or enable the service:\n%s", scripts)
		}
	})

	t.Run("unit", func(t *testing.T) {
		unit, err := os.ReadFile("arpshare.service")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range []string{
			"Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
			"AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN CAP_BPF", "CapabilityBoundingSet=CAP_NET_RAW CAP_NET_ADMIN CAP_BPF",
			"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
			"RuntimeDirectory=arpshare", "WatchdogSec=", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET",
		} {
			if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(line)).Match(unit) {
				t.Errorf("unit lacks %s", line)
			}
		}
		// verify wants the binary where ExecStart says: point it at ours.
		local := strings.ReplaceAll(string(unit), "/usr/bin/arpshare", filepath.Join(dist, "arpshare-linux-amd64"))
		path := filepath.Join(t.TempDir(), "arpshare.service")
		if err := os.WriteFile(path, []byte(local), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})
}
