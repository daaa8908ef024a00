package lab

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arpshare/arpshare/gossip"
)

// previousRelease is the build a mixed cluster runs beside this one: the
// release before this one, which docs/operations.md ("Upgrading") promises
// this one works with. There is no release tag yet, so it is the commit of
// this repository that operators ran before the upgrade work of 0.1.0 (its
// gossip sends neither a protocol range nor its release). At release this
// becomes the v0.1.0 tag's commit, and the next release is tested against
// it. The commit must be in the clone's history: a shallow clone fails
// this test rather than skip it.
var previousRelease = struct{ version, commit string }{
	version: "0.1.0~pre",
	commit:  "8c20851870754d7d47bdf3d3cfb47239bbdea86c",
}

// buildRelease builds the arpshare binary of a commit of this repository
// from its source (git archive, so the clone's work tree is left alone)
// into a test-owned directory.
func buildRelease(t *testing.T, version, commit string) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatalf("building the previous release %s needs git: %v", version, err)
	}
	if out, err := exec.Command("git", "cat-file", "-e", commit+"^{commit}").CombinedOutput(); err != nil {
		t.Fatalf("the previous release %s (commit %s) is not in this clone's history (a shallow clone? git fetch --unshallow): %v %s",
			version, commit, err, out)
	}
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("git rev-parse --show-toplevel: %v", err)
	}
	dir := t.TempDir()
	src, tarball := filepath.Join(dir, "src"), filepath.Join(dir, "src.tar")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "arpshare-"+version)
	// git archive in a subdirectory archives only that subdirectory.
	archive := exec.Command("git", "archive", "--format=tar", "-o", tarball, commit)
	archive.Dir = strings.TrimSpace(string(top))
	for _, step := range []*exec.Cmd{
		archive,
		exec.Command("tar", "-xf", tarball, "-C", src),
		exec.Command("go", "build", "-o", bin, "-ldflags", "-X main.version="+version+" -X main.commit="+commit[:12], "./cmd/arpshare"),
	} {
		if step.Args[0] == "go" {
			step.Dir = src
		}
		if out, err := step.CombinedOutput(); err != nil {
			t.Fatalf("build the previous release %s: %s: %v\n%s", version, strings.Join(step.Args, " "), err, out)
		}
	}
	return bin
}

// TestMixedReleases runs the previous release and this build in one
// cluster, as a rolling upgrade does for a while: they share the clients,
// each takes over the other's clients after a power loss, and a host of the
// previous release is upgraded by the documented procedure (drain, restart
// on the new build, resume).
func TestMixedReleases(t *testing.T) {
	requirePrivileged(t)
	prev := buildRelease(t, previousRelease.version, previousRelease.commit)
	l := newLab(t, 3, 12, HostConfig{Expect: 3})
	h1, h2, h3 := l.Hosts[0], l.Hosts[1], l.Hosts[2]
	h1.Binary, h2.Binary = prev, prev
	startAll(t, l.Hosts)
	all := []string{"h1", "h2", "h3"}
	want := func(hosts ...string) map[string]string {
		m := map[string]string{}
		for _, c := range l.Clients {
			m[c.Name] = owner(hosts, c)
		}
		return m
	}
	base := want(all...)
	for _, h := range all {
		if count(base)[h] == 0 {
			t.Fatalf("no client for %s in %v: pick other clients", h, base)
		}
	}
	waitAssignment(t, l.Clients, base, 10*time.Second)
	checkReleases(t, h3, map[string]bool{"h1": false, "h2": false, "h3": true})

	t.Run("power loss of the new build", func(t *testing.T) {
		powerLoss(t, l, h3, VIP, base, want("h1", "h2"))
		if err := h3.PowerOn(); err != nil {
			t.Fatal(err)
		}
		rejoin(t, l, h3, base)
	})
	if t.Failed() {
		return
	}

	t.Run("upgrade a host", func(t *testing.T) {
		// The previous release's own command drains it.
		if out, err := h1.Run("drain"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		waitAssignment(t, l.Clients, want("h2", "h3"), 10*time.Second)
		if err := h1.Stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		h1.Binary = ""
		if err := h1.Start(); err != nil {
			t.Fatal(err)
		}
		// The drain outlives the restart, across releases: h1 stays
		// drained until resumed.
		waitAllMembers(t, l)
		if s, err := h1.Status(); err != nil || !s.Draining {
			t.Fatalf("h1 on the new build: draining %v (%v), want the drain kept", s.Draining, err)
		}
		waitAssignment(t, l.Clients, want("h2", "h3"), 5*time.Second)
		if _, err := h1.Run("resume"); err != nil {
			t.Fatal(err)
		}
		waitAssignment(t, l.Clients, base, 10*time.Second)
		checkReleases(t, h1, map[string]bool{"h1": true, "h2": false, "h3": true})
	})
	if t.Failed() {
		return
	}

	t.Run("power loss of the previous release", func(t *testing.T) {
		powerLoss(t, l, h2, VIP, base, want("h1", "h3"))
	})

	refusedNothing(t, l)
}

// refusedNothing checks that no host's log says it dropped a peer's client
// table, rejected a member or was rejected: neither release refused the
// other.
func refusedNothing(t *testing.T, l *Lab) {
	t.Helper()
	for _, h := range l.Hosts {
		b, err := os.ReadFile(h.Log)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "client table from a peer dropped") || strings.Contains(line, "REJECTED") ||
				strings.Contains(line, "member rejected") {
				t.Errorf("%s: %s", h.Name, line)
			}
		}
	}
}

// waitAllMembers waits until every host of the lab counts them all alive.
func waitAllMembers(t *testing.T, l *Lab) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := WaitMembers(ctx, l.Hosts, len(l.Hosts)); err != nil {
		t.Fatal(err)
	}
}

// checkReleases checks what h, on this build, shows of each member's
// release: this build's members gossip their release and protocol range,
// the previous release's neither, and all of them speak this build's
// protocol version and are trusted.
func checkReleases(t *testing.T, h *Host, current map[string]bool) {
	t.Helper()
	s, err := h.Status()
	if err != nil {
		t.Fatal(err)
	}
	if s.Version == "" || s.Version == previousRelease.version {
		t.Errorf("%s runs release %q, want this build", h.Name, s.Version)
	}
	var seen []string
	for _, m := range s.Members {
		seen = append(seen, m.Name)
		if m.State != "alive" || m.Error != "" || m.MetadataVersion != gossip.MetaVersion {
			t.Errorf("%s shows %s %s (%q), protocol %d, want alive at %d", h.Name, m.Name, m.State, m.Error, m.MetadataVersion, gossip.MetaVersion)
		}
		switch {
		case current[m.Name] && (m.Software != s.Version || m.MinMetadataVersion != gossip.MinMetaVersion):
			t.Errorf("%s shows %s at release %q, protocol from %d; want %q from %d", h.Name, m.Name, m.Software, m.MinMetadataVersion, s.Version, gossip.MinMetaVersion)
		case !current[m.Name] && (m.Software != "" || m.MinMetadataVersion != 0):
			t.Errorf("%s shows %s (the previous release) at release %q, protocol from %d; it gossips neither", h.Name, m.Name, m.Software, m.MinMetadataVersion)
		}
	}
	slices.Sort(seen)
	if !slices.Equal(seen, []string{"h1", "h2", "h3"}) {
		t.Errorf("%s lists members %v", h.Name, seen)
	}
	// The table names the release, "-" for one that does not say.
	out, err := h.Run("status")
	if err != nil && !strings.Contains(out, "MEMBER") {
		t.Fatal(err)
	}
	rows := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !slices.Contains([]string{"h1", "h2", "h3"}, f[0]) {
			continue
		}
		rows++
		wantSW := "-"
		if current[f[0]] {
			wantSW = s.Version
		}
		if f[4] != wantSW {
			t.Errorf("%s status: %s's VERSION is %q, want %q:\n%s", h.Name, f[0], f[4], wantSW, out)
		}
	}
	if rows != 3 {
		t.Errorf("%s status: %d member rows, want 3:\n%s", h.Name, rows, out)
	}
}
