// Package bpftest holds what the tests of arpshare's eBPF programs
// (internal/bpf/fastpath, handover and spread) share.
package bpftest

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Privileged skips the test unless this process may load a BPF program,
// and fails it instead when ARPSHARE_REQUIRE_PRIVILEGED is set (as in CI).
func Privileged(t testing.TB) {
	t.Helper()
	if !CanLoad() {
		if os.Getenv("ARPSHARE_REQUIRE_PRIVILEGED") != "" {
			t.Fatal("loading a BPF program needs CAP_BPF (or root with its capabilities)")
		}
		t.Skip("loading a BPF program needs CAP_BPF (or root with its capabilities)")
	}
}

// CanLoad says whether this process has CAP_BPF or CAP_SYS_ADMIN in effect:
// root with its capabilities dropped has neither.
func CanLoad() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for line := range strings.Lines(string(b)) {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			return err == nil && caps&(1<<unix.CAP_BPF|1<<unix.CAP_SYS_ADMIN) != 0
		}
	}
	return false
}

// GeneratedFromSource fails unless the C source src, in the test's package
// directory, is the one its committed bpf2go output was made from: its
// sha256 is recorded in src+".sha256" by go generate. pkg is the package's
// path, for the command in the message.
func GeneratedFromSource(t *testing.T, src, pkg string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	recorded, err := os.ReadFile(src + ".sha256")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	if got, want := strings.Fields(string(recorded))[0], hex.EncodeToString(sum[:]); got != want {
		t.Errorf("%s changed since the program was generated (sha256 %s, recorded %s): run go generate %s", src, want, got, pkg)
	}
}
