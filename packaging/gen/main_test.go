package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRun writes the man pages, the completion and the changelog from the
// repository's own sources, each naming the version packaged.
func TestRun(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "gen")
	if err := run("1.2.3", "1", out, "../.."); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"arpshare.8": "1.2.3", "arpshare.toml.5": "1.2.3", "arpshare.bash": "arpshare", "changelog.yml": "1.2.3-1",
	} {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil || !strings.Contains(string(b), want) {
			t.Errorf("%s: %v, or it lacks %q", name, err, want)
		}
	}
	if err := run("1.2.3", "1", out, t.TempDir()); err == nil {
		t.Error("run without the repository's sources: nil")
	}
}
