package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeyFilePrivate: a key others can read or change is refused with the
// fix; root's or the daemon's own, readable by the daemon's group, is not.
func TestKeyFilePrivate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tt := range []struct {
		name     string
		mode     os.FileMode
		uid, gid int // -1: this process's
		want     string
	}{
		{"owner only", 0o600, -1, -1, ""},
		{"the daemon's group reads", 0o640, -1, -1, ""},
		{"everybody reads", 0o644, -1, -1, "has mode 0644: every user of this host can read or change the key, and with it join the cluster and take clients; chmod 0640 "},
		{"others write", 0o602, -1, -1, "has mode 0602: every user"},
		{"group writes", 0o660, -1, -1, "has mode 0660: its group "},
		{"another group reads", 0o640, -1, 54321, "has mode 0640: its group 54321, which this daemon does not run in, can read the key; chmod 0600 "},
		{"another user's", 0o600, 54321, -1, "belongs to user 54321, who can read and change the key: chown root "},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
		os.WriteFile(path, []byte("x\n"), 0o600)
		os.Chmod(path, tt.mode)
		if tt.uid != -1 || tt.gid != -1 {
			if os.Geteuid() != 0 {
				continue // giving a file away needs root
			}
			if err := os.Chown(path, tt.uid, tt.gid); err != nil {
				t.Fatal(err)
			}
		}
		err := KeyFilePrivate(path)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), "gossip.key_file "+path+" "+tt.want)):
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
}
