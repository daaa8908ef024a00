package drain

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// fileText is the drained-state file's content: a file that does not
// start with it was not written whole (a full disk, a crash on a file
// system that does not order data before the rename) or by arpshare.
const fileText = "drained by `arpshare drain`; `arpshare resume` undoes it\n"

// FilePath is where the operator's drain is kept in stateDir: it survives
// restarts until `arpshare resume`.
func FilePath(stateDir string) string { return filepath.Join(stateDir, "drained") }

// ReadFile says whether the operator left this host drained, and why the
// file is not trusted if it is not. A file that is empty or holds something
// else is not trusted: a host that came up drained by accident would answer
// nobody until someone noticed, while one that serves by accident is undone
// by draining it again.
func ReadFile(stateDir string) (drained bool, warning string) {
	file := FilePath(stateDir)
	b, err := os.ReadFile(file)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, ""
	case err != nil:
		return false, fmt.Sprintf("cannot read the drained state %s: %v; starting not drained (`arpshare drain` to drain)", file, err)
	case !strings.HasPrefix(string(b), strings.TrimSpace(fileText)):
		return false, fmt.Sprintf("the drained state %s is empty or corrupt (%d bytes); starting not drained (`arpshare drain` to drain)", file, len(b))
	}
	return true, ""
}

// WriteFile keeps the operator's drain (or resume) on disk, whole or not at
// all.
func WriteFile(stateDir string, drained bool) error {
	file := FilePath(stateDir)
	if !drained {
		if err := removeFileSynced(file); err != nil {
			return fmt.Errorf("resume: %w", err)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	if err := writeFileAtomic(file, []byte(fileText), 0o644); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	return nil
}

// writeFileAtomic replaces file with data whole or not at all: it writes a
// temporary file in the same folder, syncs it, renames it over file and
// syncs the folder, so that neither a full disk nor a crash leaves a
// truncated file behind.
func writeFileAtomic(file string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(file)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(file)+".*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return err
	}
	return syncDir(dir)
}

// removeFileSynced removes file, if it exists, durably.
func removeFileSynced(file string) error {
	if err := os.Remove(file); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	return syncDir(filepath.Dir(file))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
