package config

import (
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"syscall"
)

// KeyFilePrivate refuses a gossip key file that a user other than root and
// the daemon's own could read or change: whoever reads the key can join the
// cluster and take clients. Its group may read it only if the daemon runs
// in that group (the packaged root:arpshare 0640); nobody but its owner may
// write it. `arpshare run` calls it before it starts.
func KeyFilePrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("gossip.key_file: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	mode := fi.Mode().Perm()
	fix := "chmod 0600 " + path
	if InGroup(st.Gid) {
		fix = "chmod 0640 " + path
	}
	switch {
	case mode&0o007 != 0:
		return fmt.Errorf("gossip.key_file %s has mode %04o: every user of this host can read or change the key, and with it join the cluster and take clients; %s", path, mode, fix)
	case mode&0o020 != 0:
		return fmt.Errorf("gossip.key_file %s has mode %04o: its group %s can change the key; %s", path, mode, groupName(st.Gid), fix)
	case mode&0o040 != 0 && !InGroup(st.Gid):
		return fmt.Errorf("gossip.key_file %s has mode %04o: its group %s, which this daemon does not run in, can read the key; chmod 0600 %s, or chgrp %s %s if the daemon runs in group %s",
			path, mode, groupName(st.Gid), path, ServiceUser, path, ServiceUser)
	case st.Uid != 0 && int(st.Uid) != os.Geteuid():
		owner := strconv.Itoa(int(st.Uid))
		if u, err := user.LookupId(owner); err == nil {
			owner = u.Username
		}
		return fmt.Errorf("gossip.key_file %s belongs to user %s, who can read and change the key: chown root %s", path, owner, path)
	}
	return nil
}

// inGroup reports whether this process runs in group gid.
func InGroup(gid uint32) bool {
	if int(gid) == os.Getegid() {
		return true
	}
	groups, _ := os.Getgroups()
	return slices.Contains(groups, int(gid))
}

func groupName(gid uint32) string {
	name := strconv.Itoa(int(gid))
	if g, err := user.LookupGroupId(name); err == nil {
		return g.Name
	}
	return name
}
