package config

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// askTimeout bounds how long `arpshare check` waits for the running daemon.
const askTimeout = 3 * time.Second

// runningDaemon tells whether the program holding the gossip port (owner,
// 0 when it could not be told) is this host's own arpshare daemon for this
// config: the daemon that answers on api.socket and says its node's gossip
// address is gossip.bind, or, failing that, an `arpshare run` of this very
// config file. It returns that daemon's pid and how it was recognised, or
// 0. A config edited since the daemon started (the routine edit, check,
// reload) is still recognised: neither way reads the daemon's settings.
func (cfg *Config) runningDaemon(owner int) (int, string) {
	if pid := cfg.askDaemon(); pid != 0 && (owner == 0 || owner == pid) {
		return pid, "it answers on " + cfg.API.Socket
	}
	if owner != 0 && runsConfig(owner, cfg.Path) {
		return owner, "it runs " + cfg.Path
	}
	return 0, ""
}

// askDaemon asks the daemon on api.socket for its status, and returns its
// pid (from the socket's peer credentials) if its own member's gossip
// address is gossip.bind; else 0.
func (cfg *Config) askDaemon() int {
	if cfg.API.Socket == "" || !cfg.Gossip.Bind.IsValid() {
		return 0
	}
	pid := 0
	client := &http.Client{Timeout: askTimeout, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "unix", cfg.API.Socket)
			if err == nil {
				pid = peerPID(c)
			}
			return c, err
		},
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://arpshare/v1/status")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var s runningStatus
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&s) != nil {
		return 0
	}
	for _, m := range s.Members {
		if m.Name == s.Node && m.Address == cfg.Gossip.Bind {
			return pid
		}
	}
	return 0
}

// runningStatus is the part of the API's status that tells a daemon's own
// gossip address: its node's name and the members' addresses.
type runningStatus struct {
	Node    string `json:"node"`
	Members []struct {
		Name    string         `json:"name"`
		Address netip.AddrPort `json:"address"`
	} `json:"members"`
}

// peerPID is the pid of the process at the other end of a Unix socket, 0
// if unknown.
func peerPID(c net.Conn) int {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	rc.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}

// runsConfig tells whether process pid is `arpshare run` of the config
// file at path.
func runsConfig(pid int, path string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	conf, ok := runConfigArg(strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"))
	if !ok {
		return false
	}
	if !filepath.IsAbs(conf) {
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if err != nil {
			return false
		}
		conf = filepath.Join(cwd, conf)
	}
	running, err := os.Stat(conf)
	if err != nil {
		return false
	}
	checked, err := os.Stat(path)
	return err == nil && os.SameFile(running, checked)
}

// runConfigArg returns the config file of an `arpshare run` command line
// (--config, -config, with the value after = or in the next argument; the
// default without), and whether args is one.
func runConfigArg(args []string) (string, bool) {
	if len(args) < 2 || filepath.Base(args[0]) != "arpshare" || args[1] != "run" {
		return "", false
	}
	conf := DefaultConfigPath
	for i := 2; i < len(args); i++ {
		name, value, inline := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if !strings.HasPrefix(args[i], "-") || name != "config" {
			continue
		}
		if inline {
			conf = value
		} else if i+1 < len(args) {
			conf = args[i+1]
			i++
		}
	}
	return conf, true
}
