package config

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Finding is one result of a host check: an error makes `arpshare check`
// fail, a warning does not, and a note only says what was found.
type Finding struct {
	Error   bool
	Note    bool
	Message string
}

// ServiceUser is the user the packaged unit runs the daemon as.
const ServiceUser = "arpshare"

// CheckHost checks the config against the host it runs on: what the file
// alone cannot tell. A missing interface, a bind address that is not this
// host's, a gossip port taken by another program and a key file others can
// read are errors. A missing interface is only a warning for a VIP with
// wait_for_interface (the daemon waits for it). The port held
// by this host's own running daemon is as expected (the routine edit,
// check, reload): a note says so.
func (cfg *Config) CheckHost() []Finding {
	var out []Finding
	warn := func(format string, args ...any) {
		out = append(out, Finding{Message: fmt.Sprintf(format, args...)})
	}
	fail := func(format string, args ...any) {
		out = append(out, Finding{Error: true, Message: fmt.Sprintf(format, args...)})
	}
	for _, v := range cfg.VIPs {
		if _, err := net.InterfaceByName(v.Interface); err == nil {
			continue
		}
		if v.WaitForInterface {
			warn("vip %q: interface %s does not exist yet: the daemon starts and waits for it (wait_for_interface = true)", v.Name, v.Interface)
		} else {
			fail("vip %q: interface %s does not exist on this host (it has %s): fix vip.interface, or set wait_for_interface = true in this [[vip]] if the interface is made after arpshare starts",
				v.Name, v.Interface, hostInterfaces())
		}
	}
	if b := cfg.Gossip.Bind; b.IsValid() {
		if !isLocalAddr(b.Addr()) {
			fail("gossip.bind %s is not an address of this host (see `ip address`)", b.Addr())
		} else if owner, err := portTaken(b); err != nil {
			fail("gossip.bind %s: %v", b, err)
		} else if owner != nil {
			if pid, how := cfg.runningDaemon(owner.pid); pid != 0 {
				out = append(out, Finding{Note: true, Message: fmt.Sprintf(
					"gossip.bind %s: port %d is held by this host's running arpshare (pid %d, %s), as expected", b, b.Port(), pid, how)})
			} else {
				fail("gossip.bind %s: the port is taken by %s; Docker Swarm, Serf, Consul and MetalLB speakers also use 7946: pick another port for every host", b, owner)
			}
		}
	}
	if cfg.Gossip.KeyFile != "" {
		out = append(out, checkKeyFile(cfg.Gossip.KeyFile)...)
	}
	for _, v := range cfg.VIPs {
		if v.Check != nil && len(v.Check.Exec) > 0 {
			out = append(out, checkExecFile(v.Name, v.Check.Exec[0])...)
		}
	}
	return out
}

// checkExecFile wants a VIP's exec check, and every folder above it,
// changeable by root and the daemon's own user only: whoever can change it
// runs code as the daemon's user at every check. A folder with the sticky
// bit (/tmp) keeps others from replacing files they do not own.
func checkExecFile(vip, path string) []Finding {
	fail := func(format string, args ...any) []Finding {
		return []Finding{{Error: true, Message: fmt.Sprintf("vip %q: check.exec %s %s", vip, path, fmt.Sprintf(format, args...))}}
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fail("cannot be run: %v", err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return fail("cannot be run: %v", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fail("is not an executable file (mode %s): chmod 0755 %s", fi.Mode(), real)
	}
	trusted := map[uint32]bool{0: true, uint32(os.Geteuid()): true}
	if u, err := user.Lookup(ServiceUser); err == nil {
		if uid, err := strconv.ParseUint(u.Uid, 10, 32); err == nil {
			trusted[uint32(uid)] = true
		}
	}
	for p := real; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fail("cannot be run: %v", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		what := "is"
		if p != real {
			what = "is in " + p + ", which is"
		}
		if mode := fi.Mode(); mode.Perm()&0o022 != 0 && (p == real || mode&os.ModeSticky == 0) {
			return fail("%s writable by group or others (mode %04o): they could change what the daemon runs; chmod go-w %s", what, mode.Perm(), p)
		}
		if !trusted[st.Uid] {
			owner := strconv.Itoa(int(st.Uid))
			if u, err := user.LookupId(owner); err == nil {
				owner = u.Username
			}
			return fail("%s owned by user %s, who could change what the daemon runs: chown root %s", what, owner, p)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

// hostInterfaces lists this host's interfaces but lo, for an error that
// says which interface does not exist.
func hostInterfaces() string {
	ifs, err := net.Interfaces()
	if err != nil {
		return "interfaces that cannot be listed: " + err.Error()
	}
	var names []string
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 {
			names = append(names, i.Name)
		}
	}
	if len(names) == 0 {
		return "no interface but lo"
	}
	return strings.Join(names, ", ")
}

func isLocalAddr(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a.Unmap() {
				return true
			}
		}
	}
	return false
}

// process is a program holding a port; pid 0 when it could not be told.
type process struct {
	pid  int
	name string
}

func (p *process) String() string {
	if p.pid == 0 {
		return "another program"
	}
	return fmt.Sprintf("%s (pid %d)", p.name, p.pid)
}

// portTaken tries to bind the gossip port as memberlist would, TCP and UDP.
// If it is taken, it names the owner as best it can (nil if the port is
// free).
func portTaken(ap netip.AddrPort) (*process, error) {
	tcp, err := net.Listen("tcp", ap.String())
	if err == nil {
		tcp.Close()
		udp, uerr := net.ListenPacket("udp", ap.String())
		if uerr == nil {
			udp.Close()
			return nil, nil
		}
		err = uerr
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		return nil, err
	}
	return portOwner(ap.Port()), nil
}

// portOwner finds the process holding a socket on port, through
// /proc/net/{tcp,udp}{,6} and the processes' file descriptors. Without the
// privilege to read other processes' descriptors its pid is 0.
func portOwner(port uint16) *process {
	inodes := map[string]bool{}
	for _, f := range []string{"tcp", "tcp6", "udp", "udp6"} {
		file, err := os.Open("/proc/net/" + f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(file)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 {
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); ok && err == nil && uint16(p) == port {
				inodes["socket:["+fields[9]+"]"] = true
			}
		}
		file.Close()
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range procs {
		if link, err := os.Readlink(fd); err == nil && inodes[link] {
			pid, _ := strconv.Atoi(strings.Split(fd, "/")[2])
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			return &process{pid: pid, name: strings.TrimSpace(string(comm))}
		}
	}
	return &process{}
}

// checkKeyFile wants the gossip key readable by root and the service user
// only: whoever reads it can join the cluster and take clients. A key owned
// by the user this runs as is that user's already.
func checkKeyFile(path string) []Finding {
	fi, err := os.Stat(path)
	if err != nil {
		return []Finding{{Error: true, Message: fmt.Sprintf("gossip.key_file: %v", err)}}
	}
	var out []Finding
	mode := fi.Mode().Perm()
	if mode&0o007 != 0 || mode&0o020 != 0 {
		out = append(out, Finding{Error: true, Message: fmt.Sprintf(
			"gossip.key_file %s has mode %04o: other users can read or change the key; chmod 0640 %s", path, mode, path)})
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return out
	}
	owner := strconv.Itoa(int(st.Uid))
	if u, err := user.LookupId(owner); err == nil {
		owner = u.Username
	}
	group := strconv.Itoa(int(st.Gid))
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	if owner != "root" && owner != ServiceUser && int(st.Uid) != os.Geteuid() {
		out = append(out, Finding{Error: true, Message: fmt.Sprintf(
			"gossip.key_file %s belongs to %s: make it root's (chown root:%s %s)", path, owner, ServiceUser, path)})
	}
	readable := (owner == ServiceUser && mode&0o400 != 0) || (group == ServiceUser && mode&0o040 != 0)
	if _, err := user.Lookup(ServiceUser); err == nil && !readable {
		out = append(out, Finding{Message: fmt.Sprintf(
			"gossip.key_file %s is not readable by the %s user the unit runs as: chgrp %s %s && chmod 0640 %s", path, ServiceUser, ServiceUser, path, path)})
	}
	return out
}
