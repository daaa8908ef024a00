package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestVersionsSort: the versions packaging/version.sh gives along a
// project's history sort in that order in dpkg and rpm alike, and every
// untagged build of an upcoming release sorts before the release itself, so
// installing the release over a development build is an upgrade (0.1.0+221.g8c20851
// once sorted after 0.1.0).
func TestVersionsSort(t *testing.T) {
	// Not parallel: it writes programs and runs them, and a parallel
	// test's fork can hold the written file open ("text file busy").
	requireTools(t, "git", "dpkg", "rpm")
	repo := t.TempDir()
	script, err := os.ReadFile("version.sh")
	if err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(repo, "packaging"), 0o755)
	if err := os.WriteFile(filepath.Join(repo, "packaging/version.sh"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"}, args...)...)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	changelog := func(top string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(repo, "CHANGELOG.md"), []byte("# Changelog\n\n"+top+"\n\n## [0.0.1] - 2026-01-01\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	commit := func(msg string) {
		t.Helper()
		git("add", "-A")
		git("commit", "-q", "--allow-empty", "-m", msg)
	}
	version := func() string {
		t.Helper()
		out, err := exec.Command("sh", filepath.Join(repo, "packaging/version.sh")).Output()
		if err != nil {
			t.Fatalf("version.sh: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q", "-b", "main")
	changelog("## [0.1.0] - unreleased")
	commit("one")
	commit("two")
	var history []string
	step := func(want string) {
		t.Helper()
		v := version()
		if !regexp.MustCompile(want).MatchString(v) {
			t.Errorf("version.sh: %q, want %s", v, want)
		}
		history = append(history, v)
	}
	step(`^0\.1\.0~dev\.2\.g[0-9a-f]{12}$`)
	commit("three")
	step(`^0\.1\.0~dev\.3\.g[0-9a-f]{12}$`)
	os.WriteFile(filepath.Join(repo, "CHANGELOG.md"), []byte("# Changelog\n\n## [0.1.0] - 2026-12-02\n"), 0o644)
	step(`^0\.1\.0~dev\.3\.g[0-9a-f]{12}\.dirty$`)
	commit("release")
	git("tag", "v0.1.0")
	step(`^0\.1\.0$`)
	commit("fix")
	step(`^0\.1\.0\+1\.g[0-9a-f]{12}$`)
	changelog("## [0.2.0] - unreleased")
	commit("next")
	step(`^0\.2\.0~dev\.2\.g[0-9a-f]{12}$`)
	git("tag", "v0.2.0")
	step(`^0\.2\.0$`)

	for i := 1; i < len(history); i++ {
		older, newer := history[i-1], history[i]
		if older == newer {
			continue
		}
		if out, err := exec.Command("dpkg", "--compare-versions", older, "lt", newer).CombinedOutput(); err != nil {
			t.Errorf("dpkg sorts %s after %s: %v %s", older, newer, err, out)
		}
		if got := rpmVercmp(t, older, newer); got != "-1" {
			t.Errorf("rpm.vercmp(%s, %s) = %s, want -1", older, newer, got)
		}
	}
	// Every pre-release before its own release, as dpkg and rpm see them.
	for _, pre := range history {
		release, _, ok := strings.Cut(pre, "~")
		if !ok {
			continue
		}
		if out, err := exec.Command("dpkg", "--compare-versions", pre, "lt", release).CombinedOutput(); err != nil {
			t.Errorf("dpkg sorts %s after %s: %v %s", pre, release, err, out)
		}
		if got := rpmVercmp(t, pre, release); got != "-1" {
			t.Errorf("rpm.vercmp(%s, %s) = %s, want -1", pre, release, got)
		}
	}
}

// rpmVercmp is rpm's own comparison: -1, 0 or 1.
func rpmVercmp(t *testing.T, a, b string) string {
	t.Helper()
	out, err := exec.Command("rpm", "--eval", `%{lua: print(rpm.vercmp("`+a+`", "`+b+`"))}`).CombinedOutput()
	if err != nil {
		t.Fatalf("rpm.vercmp: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}
