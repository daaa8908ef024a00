package api

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/user"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/arpshare/arpshare/internal/config"
)

// StatusGroup is the group whose members may read the API (status,
// clients, owner) without being able to change anything: the API socket is
// given to it when it exists and the daemon runs in it. Draining, resuming
// and pprof take root or the daemon's own user, checked on each connection
// by the kernel's word (SO_PEERCRED), whoever may open the socket.
const StatusGroup = "arpshare-status"

// peerListener tags each accepted unix connection with its peer's
// credentials, carried by its RemoteAddr through any wrapping listener.
type peerListener struct{ net.Listener }

// peerAddr is a unix connection's remote address with its peer's uid; ok
// is false when the kernel did not say.
type peerAddr struct {
	net.Addr
	uid int
	ok  bool
}

type peerConn struct {
	net.Conn
	addr peerAddr
}

func (c peerConn) RemoteAddr() net.Addr { return c.addr }

func (l peerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	pa := peerAddr{Addr: c.RemoteAddr()}
	if uc, ok := c.(*net.UnixConn); ok {
		if raw, err := uc.SyscallConn(); err == nil {
			raw.Control(func(fd uintptr) {
				if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
					pa.uid, pa.ok = int(cred.Uid), true
				}
			})
		}
	}
	return peerConn{Conn: c, addr: pa}, nil
}

type peerKey struct{}

// peerContext puts the connection's peer credentials, if it has them, in
// the context of its requests (http.Server.ConnContext).
func peerContext(ctx context.Context, c net.Conn) context.Context {
	if pa, ok := c.RemoteAddr().(peerAddr); ok {
		return context.WithValue(ctx, peerKey{}, pa)
	}
	return ctx
}

// mayChange reports whether the request's peer may drain, resume or
// profile: root or the daemon's own user. A request without credentials
// (not over the unix socket) may not.
func mayChange(r *http.Request, operators func(uid int) bool) bool {
	pa, ok := r.Context().Value(peerKey{}).(peerAddr)
	return ok && pa.ok && operators(pa.uid)
}

// operator is the default rule of mayChange.
func operator(uid int) bool { return uid == 0 || uid == os.Geteuid() }

// onlyOperators refuses the request unless its peer may change things.
func (a *Server) onlyOperators(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ops := a.operators
		if ops == nil {
			ops = operator
		}
		if !mayChange(r, ops) {
			who := "the daemon's user"
			if u, err := user.LookupId(strconv.Itoa(os.Geteuid())); err == nil {
				who = "user " + u.Username
			}
			http.Error(w, fmt.Sprintf("%s %s: only root and %s may; members of group %s may read status only", r.Method, r.URL.Path, who, StatusGroup), http.StatusForbidden)
			return
		}
		h(w, r)
	}
}

// shareSocket gives the socket to StatusGroup when it exists and this
// process runs in it (it may then change a file's group to it); else the
// socket stays the daemon's group's. It says which.
func shareSocket(path string) (string, error) {
	g, err := user.LookupGroup(StatusGroup)
	if err != nil {
		return "", nil
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil || !config.InGroup(uint32(gid)) {
		return "", nil
	}
	if err := os.Chown(path, -1, gid); err != nil {
		return "", err
	}
	return StatusGroup, nil
}
