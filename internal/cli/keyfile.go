package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// writeKeyFile writes key to a new file at path, created with mode 0600 so
// that nobody else can read it at any moment; with group, it then goes to
// that group and mode 0640. An existing file is an error unless force:
// then the new file replaces it at once (a rename), never half written.
// It returns the file's mode.
func writeKeyFile(path, key, group string, force bool) (os.FileMode, error) {
	gid := -1
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return 0, fmt.Errorf("--group %s: %w", group, err)
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return 0, fmt.Errorf("--group %s: gid %q", group, g.Gid)
		}
	}
	target := path
	if force {
		path = filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
		os.Remove(path) // left by an interrupted run
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return 0, fmt.Errorf("%s exists: keep it, or replace it (and so the cluster's key on this host) with --force", path)
	}
	if err != nil {
		return 0, err
	}
	mode := os.FileMode(0o600)
	err = f.Chmod(mode) // whatever the umask took away, the owner reads it
	if err == nil && gid >= 0 {
		mode = 0o640
		if err = f.Chown(-1, gid); err == nil {
			err = f.Chmod(mode)
		}
	}
	if err == nil {
		_, err = f.WriteString(key)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && path != target {
		err = os.Rename(path, target)
	}
	if err != nil {
		os.Remove(path)
		return 0, fmt.Errorf("write %s: %w", target, err)
	}
	return mode, nil
}
