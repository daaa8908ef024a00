package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The kernel's neighbour tables (ARP and NDP) are shared by every network
// namespace, and so are their limits: past gc_thresh3 entries, in all
// namespaces together, the kernel logs "neighbour: arp_cache: neighbor table
// overflow!" and stops resolving, and clients silently stop answering ARP.
// A lab of 32 hosts or more passes the defaults (128/512/1024), so it raises
// them for its run and puts them back when it closes, pass or fail.
//
// Labs run side by side (several test binaries, other engineers' labs), so
// each lab that raises them takes a lease in neighDir; the values found
// before the first lease are saved there, and the last lab to let go (or
// the first to find only leases of processes that are gone) restores them.
var (
	neighDir  = "/run/arpshare-lab/neigh"
	neighKeys = []string{
		"net/ipv4/neigh/default/gc_thresh1", "net/ipv4/neigh/default/gc_thresh2", "net/ipv4/neigh/default/gc_thresh3",
		"net/ipv6/neigh/default/gc_thresh1", "net/ipv6/neigh/default/gc_thresh2", "net/ipv6/neigh/default/gc_thresh3",
	}
	// neighSys is where the sysctls are; a variable for the test.
	neighSys = "/proc/sys"
)

// neighEntries estimates the neighbour entries a lab makes per address
// family: every host talks to every other (gossip), and every client to
// every host (it may be re-pointed to any), both ways.
func neighEntries(hosts, clients int) int {
	return hosts*hosts + 2*hosts*clients
}

// neighWant returns the thresholds a lab of that many entries needs:
// garbage collection never runs below the first, and the third is four
// times the entries.
func neighWant(entries int) [3]int {
	return [3]int{entries, 2 * entries, 4 * entries}
}

// raiseNeighbourLimits raises the kernel's neighbour table thresholds, both
// families, to what entries needs (neighWant), under a lease named lease; release
// gives the lease back and restores the saved values once no lease is
// left. When the current limits already suffice it changes nothing and
// release does nothing.
func raiseNeighbourLimits(lease string, entries int) (release func() error, err error) {
	want := neighWant(entries)
	unlock, err := lockNeigh()
	if err != nil {
		return nil, err
	}
	defer unlock()
	// What the machine had before any lab raised them: saved by the first
	// lab that did, else what they are now.
	saved := filepath.Join(neighDir, "saved")
	orig, err := readSaved(saved)
	if errors.Is(err, os.ErrNotExist) {
		orig, err = readNeigh()
	}
	if err != nil {
		return nil, err
	}
	// The third threshold is the hard limit; the others only say when
	// garbage collection starts.
	if orig[2] >= want[2] && orig[5] >= want[2] {
		return func() error { return nil }, nil
	}
	if _, err := os.Stat(saved); errors.Is(err, os.ErrNotExist) {
		var b strings.Builder
		for i, k := range neighKeys {
			fmt.Fprintf(&b, "%s=%d\n", k, orig[i])
		}
		if err := os.WriteFile(saved, []byte(b.String()), 0o600); err != nil {
			return nil, fmt.Errorf("neighbour limits: save: %w", err)
		}
	}
	leaseFile := filepath.Join(neighDir, "lease-"+lease)
	if err := os.WriteFile(leaseFile, []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return nil, fmt.Errorf("neighbour limits: lease: %w", err)
	}
	cur, err := readNeigh()
	if err != nil {
		return nil, err
	}
	for i, k := range neighKeys {
		if v := want[i%3]; v > cur[i] {
			if err := writeNeigh(k, v); err != nil {
				return nil, err
			}
		}
	}
	return func() error { return releaseNeigh(leaseFile) }, nil
}

// readSaved reads the values saved before the first lease, in neighKeys'
// order.
func readSaved(saved string) ([]int, error) {
	b, err := os.ReadFile(saved)
	if err != nil {
		return nil, err
	}
	vals := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("neighbour limits: %s: bad saved value %q", saved, line)
		}
		vals[k] = n
	}
	var out []int
	for _, k := range neighKeys {
		n, ok := vals[k]
		if !ok {
			return nil, fmt.Errorf("neighbour limits: %s: no %s", saved, k)
		}
		out = append(out, n)
	}
	return out, nil
}

// releaseNeigh drops a lease, and those of processes that are gone, and
// restores the saved limits when none is left.
func releaseNeigh(leaseFile string) error {
	unlock, err := lockNeigh()
	if err != nil {
		return err
	}
	defer unlock()
	os.Remove(leaseFile)
	leases, _ := filepath.Glob(filepath.Join(neighDir, "lease-*"))
	live := 0
	for _, f := range leases {
		b, _ := os.ReadFile(f)
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || syscall.Kill(pid, 0) == syscall.ESRCH {
			os.Remove(f) // a lab that died without closing
			continue
		}
		live++
	}
	if live > 0 {
		return nil
	}
	saved := filepath.Join(neighDir, "saved")
	orig, err := readSaved(saved)
	if err != nil {
		return fmt.Errorf("neighbour limits: restore: %w", err)
	}
	var errs []error
	for i, k := range neighKeys {
		errs = append(errs, writeNeigh(k, orig[i]))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return os.Remove(saved)
}

// lockNeigh takes the lock on neighDir, making it if need be.
func lockNeigh() (unlock func(), err error) {
	if err := os.MkdirAll(neighDir, 0o700); err != nil {
		return nil, fmt.Errorf("neighbour limits: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(neighDir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("neighbour limits: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("neighbour limits: lock: %w", err)
	}
	return func() { f.Close() }, nil
}

func readNeigh() ([]int, error) {
	var out []int
	for _, k := range neighKeys {
		b, err := os.ReadFile(filepath.Join(neighSys, k))
		if err != nil {
			return nil, fmt.Errorf("neighbour limits: %w", err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("neighbour limits: %s: %w", k, err)
		}
		out = append(out, n)
	}
	return out, nil
}

func writeNeigh(key string, v int) error {
	if err := os.WriteFile(filepath.Join(neighSys, key), []byte(strconv.Itoa(v)), 0); err != nil {
		return fmt.Errorf("neighbour limits: set %s: %w", strings.ReplaceAll(key, "/", "."), err)
	}
	return nil
}
