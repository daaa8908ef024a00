package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arpshare/arpshare/internal/config"
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
		{name: "drained", content: ptr(drainedText), drained: true},
		{name: "empty", content: ptr(""), warningHas: "is empty or corrupt (0 bytes); starting not drained"},
		{name: "garbage", content: ptr("\x00\x00\x00"), warningHas: "is empty or corrupt (3 bytes)"},
	} {
		dir := t.TempDir()
		cfg := &config.Config{Node: config.NodeConfig{StateDir: dir}}
		file := filepath.Join(dir, "drained")
		if tt.content != nil {
			if err := os.WriteFile(file, []byte(*tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		s := newHostState(cfg)
		if s.Draining() != tt.drained {
			t.Errorf("%s: drained %v, want %v", tt.name, s.Draining(), tt.drained)
		}
		if tt.warningHas == "" && s.warning != "" || !strings.Contains(s.warning, tt.warningHas) || tt.warningHas != "" && !strings.Contains(s.warning, file) {
			t.Errorf("%s: warning %q, want one with %q and the file", tt.name, s.warning, tt.warningHas)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestSetDrainedAtomic: draining writes the whole file through a temporary
// one that it leaves nowhere; resuming removes it; a restart reads it back.
func TestSetDrainedAtomic(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")
	s := newHostState(&config.Config{Node: config.NodeConfig{StateDir: dir}})
	if changed, err := s.SetDrained(true); err != nil || !changed {
		t.Fatalf("drain: changed %v, %v", changed, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "drained" {
		t.Errorf("state folder holds %v, want the drained file alone", entries)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "drained")); err != nil || string(b) != drainedText {
		t.Errorf("drained file %q (%v), want %q", b, err, drainedText)
	}
	if fi, err := os.Stat(filepath.Join(dir, "drained")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("drained file mode %v (%v), want 0644", fi.Mode().Perm(), err)
	}
	if !newHostState(&config.Config{Node: config.NodeConfig{StateDir: dir}}).Draining() {
		t.Error("a restart after drain does not start drained")
	}
	// Replacing a file keeps no temporary file either.
	if err := writeFileAtomic(filepath.Join(dir, "drained"), []byte(drainedText), 0o644); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("state folder holds %v after a rewrite, want the drained file alone", entries)
	}
	if changed, err := s.SetDrained(false); err != nil || !changed {
		t.Fatalf("resume: changed %v, %v", changed, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "drained")); !os.IsNotExist(err) {
		t.Errorf("drained file still there after resume: %v", err)
	}
	if newHostState(&config.Config{Node: config.NodeConfig{StateDir: dir}}).Draining() {
		t.Error("a restart after resume starts drained")
	}
}
