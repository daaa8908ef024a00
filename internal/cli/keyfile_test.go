package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKeygenOutput: keygen -o makes a new file of mode 0600 (umask 0 or
// not), 0640 with --group, refuses to replace one without --force, and
// replaces it with.
func TestKeygenOutput(t *testing.T) {
	old := syscall.Umask(0) // not parallel: the umask is the process's
	defer syscall.Umask(old)
	dir := t.TempDir()
	key := filepath.Join(dir, "gossip.key")
	readKey := func() (string, os.FileMode, uint32) {
		t.Helper()
		b, err := os.ReadFile(key)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(key)
		if k, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(string(b), "\n")); err != nil || len(k) != 32 {
			t.Fatalf("%s holds %q: want 32 bytes of base64 and a newline", key, b)
		}
		return string(b), fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid
	}
	if code, out, errs := runCLI("keygen", "-o", key); code != 0 || out != "wrote a new key to "+key+" (mode 0600)\n" {
		t.Fatalf("keygen -o: exit %d, %q %q", code, out, errs)
	}
	first, mode, _ := readKey()
	if mode != 0o600 {
		t.Errorf("keygen -o made mode %04o, want 0600", mode)
	}
	if code, _, errs := runCLI("keygen", "--output", key); code != 1 || !strings.Contains(errs, key+" exists: keep it, or replace it") {
		t.Errorf("keygen over an existing file: exit %d, %q", code, errs)
	}
	if k, _, _ := readKey(); k != first {
		t.Error("keygen without --force changed the existing key")
	}
	g, err := user.LookupGroupId(strconv.Itoa(os.Getegid()))
	if err != nil {
		t.Fatal(err)
	}
	if code, out, errs := runCLI("keygen", "-o", key, "--force", "--group", g.Name); code != 0 || !strings.Contains(out, "(mode 0640)") {
		t.Fatalf("keygen --force --group: exit %d, %q %q", code, out, errs)
	}
	if k, mode, gid := readKey(); k == first || mode != 0o640 || int(gid) != os.Getegid() {
		t.Errorf("after --force --group %s: new key %v, mode %04o, gid %d", g.Name, k != first, mode, gid)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("keygen --force left files behind: %v", entries)
	}
	if code, _, errs := runCLI("keygen", "--group", g.Name); code != 2 || !strings.Contains(errs, "need --output") {
		t.Errorf("keygen --group without --output: exit %d, %q", code, errs)
	}
}

// TestRunRefusesOpenKey: `arpshare run` with a key file others can read
// exits 1 before it starts, naming the file and the chmod that fixes it.
// It runs in a network namespace of its own, so that a daemon that did
// start could touch none of this machine's interfaces (and its API socket
// cannot be made, so it would fail soon).
func TestRunRefusesOpenKey(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		if os.Getenv("ARPSHARE_REQUIRE_PRIVILEGED") != "" {
			t.Fatal("needs root for a network namespace, and ARPSHARE_REQUIRE_PRIVILEGED is set")
		}
		t.Skip("needs root for a network namespace")
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "gossip.key")
	if code, _, errs := runCLI("keygen", "-o", key); code != 0 {
		t.Fatal(errs)
	}
	os.Chmod(key, 0o644)
	config := filepath.Join(dir, "a.toml")
	os.WriteFile(config, []byte("[gossip]\nbind = \"127.0.0.1:7946\"\nkey_file = \"gossip.key\"\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.200\"\ninterface = \"eth0\"\n[api]\nsocket = \""+dir+"/a.toml/api.sock\"\n"), 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperRun$")
	cmd.Env = append(os.Environ(), "ARPSHARE_HELPER_CONFIG="+config)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	var errs bytes.Buffer
	cmd.Stderr = &errs
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != ExitFailure || !strings.Contains(errs.String(), "gossip.key_file "+key+" has mode 0644") ||
		!strings.Contains(errs.String(), "chmod 0640 "+key) {
		t.Errorf("run with a key of mode 0644: %v, %q", err, errs.String())
	}
}

// TestHelperRun is `arpshare run` for TestRunRefusesOpenKey, in its
// network namespace.
func TestHelperRun(t *testing.T) {
	config := os.Getenv("ARPSHARE_HELPER_CONFIG")
	if config == "" {
		t.Skip("run by TestRunRefusesOpenKey")
	}
	os.Exit(Main([]string{"run", "--config", config}, os.Stdout, os.Stderr, Build{}))
}
