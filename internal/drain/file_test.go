package drain

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDrainedStateFile: the drained flag survives a restart; a drained
// file that is empty (a full disk) or holds something else starts the host
// not drained, with a warning that names the file.
func TestDrainedStateFile(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name       string
		content    *string // nil: no file
		drained    bool
		warningHas string
	}{
		{name: "no file"},
		{name: "drained", content: ptr(fileText), drained: true},
		{name: "empty", content: ptr(""), warningHas: "is empty or corrupt (0 bytes); starting not drained"},
		{name: "garbage", content: ptr("\x00\x00\x00"), warningHas: "is empty or corrupt (3 bytes)"},
	} {
		dir := t.TempDir()
		file := filepath.Join(dir, "drained")
		if tt.content != nil {
			if err := os.WriteFile(file, []byte(*tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		drained, warning := ReadFile(dir)
		if drained != tt.drained {
			t.Errorf("%s: drained %v, want %v", tt.name, drained, tt.drained)
		}
		if tt.warningHas == "" && warning != "" || !strings.Contains(warning, tt.warningHas) || tt.warningHas != "" && !strings.Contains(warning, file) {
			t.Errorf("%s: warning %q, want one with %q and the file", tt.name, warning, tt.warningHas)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestSetDrainedAtomic: draining writes the whole file through a temporary
// one that it leaves nowhere; resuming removes it; a restart reads it back.
func TestSetDrainedAtomic(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")
	if err := WriteFile(dir, true); err != nil {
		t.Fatalf("drain: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "drained" {
		t.Errorf("state folder holds %v, want the drained file alone", entries)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "drained")); err != nil || string(b) != fileText {
		t.Errorf("drained file %q (%v), want %q", b, err, fileText)
	}
	if fi, err := os.Stat(filepath.Join(dir, "drained")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("drained file mode %v (%v), want 0644", fi.Mode().Perm(), err)
	}
	if drained, _ := ReadFile(dir); !drained {
		t.Error("a restart after drain does not start drained")
	}
	// Replacing a file keeps no temporary file either.
	if err := writeFileAtomic(filepath.Join(dir, "drained"), []byte(fileText), 0o644); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("state folder holds %v after a rewrite, want the drained file alone", entries)
	}
	if err := WriteFile(dir, false); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "drained")); !os.IsNotExist(err) {
		t.Errorf("drained file still there after resume: %v", err)
	}
	if drained, _ := ReadFile(dir); drained {
		t.Error("a restart after resume starts drained")
	}
}
