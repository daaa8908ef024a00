package health

import (
	"errors"
	"fmt"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// checkEnv is the whole environment of an exec health check: nothing of
// the daemon's own (NOTIFY_SOCKET, WATCHDOG_*, LISTEN_*, INVOCATION_ID,
// CREDENTIALS_DIRECTORY, JOURNAL_STREAM) reaches it.
var checkEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

// startUnprivileged starts cmd with no capabilities. Capabilities are a
// thread's, and a child takes them from the thread that forks it, so cmd
// is started from a thread of its own, locked to a goroutine that ends
// without unlocking it: Go then ends the thread too, and no other
// goroutine ever runs with its lowered credentials. Before the fork that
// thread clears its ambient and inheritable sets (the unit's
// AmbientCapabilities would otherwise pass CAP_NET_ADMIN, CAP_NET_RAW and
// CAP_BPF on to the check), drops its bounding set when it may (as root:
// the check then runs as root without capabilities), and sets
// no_new_privs, so that no set-user-ID or file-capability program brings
// any back.
func startUnprivileged(cmd *exec.Cmd) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread's credentials are changed for good.
		if err := dropThreadCapabilities(); err != nil {
			done <- fmt.Errorf("drop capabilities before the check: %w", err)
			return
		}
		done <- cmd.Start()
	}()
	return <-done
}

// dropThreadCapabilities lowers the calling thread's capabilities as far
// as it may; see startUnprivileged.
func dropThreadCapabilities() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	if data[unix.CAP_SETPCAP/32].Effective&(1<<(unix.CAP_SETPCAP%32)) != 0 {
		for c := 0; c < 64; c++ {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); errors.Is(err, unix.EINVAL) {
				break // past the kernel's last capability
			} else if err != nil {
				return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
			}
		}
	}
	// EINVAL: a kernel before 4.3, which has no ambient set.
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("clear the ambient capabilities: %w", err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	return nil
}
