// Package bpf holds what arpshare's kernel programs share: loading a
// program compiled by bpf2go, attaching it at tc ingress with tcx, reading
// its per-CPU counters, and the clock its timestamps are on. The programs
// are its subpackages: fastpath (answers settled clients' ARP requests and
// Neighbor Solicitations), handover (hands a moved client's open TCP flows
// to its previous owner) and spread (spreads the flows that reach a VIP
// through a router over the hosts). bpftest holds what their tests share.
//
// The packaged unit grants CAP_BPF and CAP_NET_ADMIN, not CAP_PERFMON or
// CAP_SYS_ADMIN, and every program must load with those alone: the loader
// asks for nothing more (no pinning, no kernel module types), and the C
// sources avoid what the verifier refuses without CAP_PERFMON (a pointer
// into the packet moved by a variable offset).
package bpf

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Load loads the programs and maps of a bpf2go-generated spec into objs
// (the generated Objects struct). load is the generated loader; resize,
// if set, adjusts the spec (its maps' sizes) before the kernel sees it.
// what names the program in errors; a verifier error carries its log.
func Load(what string, load func() (*ebpf.CollectionSpec, error), resize func(*ebpf.CollectionSpec), objs any) error {
	spec, err := load()
	if err != nil {
		return fmt.Errorf("load %s: %w", what, err)
	}
	if resize != nil {
		resize(spec)
	}
	if err := spec.LoadAndAssign(objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("load %s: %w (verifier: %+v)", what, err, ve)
		}
		return fmt.Errorf("load %s: %w", what, err)
	}
	return nil
}

// AttachIngress runs prog on the tc ingress of the interface with tcx
// (Linux 6.6), after the programs already there, or before them when
// first. The others keep running: each program passes on what it does
// not decide.
func AttachIngress(what string, ifindex int, prog *ebpf.Program, first bool) (link.Link, error) {
	opts := link.TCXOptions{Interface: ifindex, Program: prog, Attach: ebpf.AttachTCXIngress}
	if first {
		opts.Anchor = link.Head()
	}
	l, err := link.AttachTCX(opts)
	if err != nil {
		return nil, fmt.Errorf("attach %s to tcx ingress: %w", what, err)
	}
	return l, nil
}

// Links are a program's tcx attachments, one per interface index; the zero
// value has none.
type Links struct{ by map[int]link.Link }

// Attach attaches prog at the interface's ingress (see AttachIngress),
// unless it is attached there already.
func (l *Links) Attach(what string, ifindex int, prog *ebpf.Program, first bool) error {
	if _, ok := l.by[ifindex]; ok {
		return nil
	}
	k, err := AttachIngress(what, ifindex, prog, first)
	if err != nil {
		return err
	}
	if l.by == nil {
		l.by = map[int]link.Link{}
	}
	l.by[ifindex] = k
	return nil
}

// Detach takes the program off the interface.
func (l *Links) Detach(ifindex int) error {
	k, ok := l.by[ifindex]
	if !ok {
		return nil
	}
	delete(l.by, ifindex)
	return k.Close()
}

// Close takes the program off every interface.
func (l *Links) Close() error {
	var errs []error
	for i, k := range l.by {
		errs = append(errs, k.Close())
		delete(l.by, i)
	}
	return errors.Join(errs...)
}

// Counters reads a per-CPU array of counters, one per name in index
// order, each summed over the CPUs.
func Counters(what string, m *ebpf.Map, names []string) (map[string]uint64, error) {
	out := make(map[string]uint64, len(names))
	for i, name := range names {
		n, err := Count(m, uint32(i))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out[name] = n
	}
	return out, nil
}

// Count reads the counter at index i of a per-CPU array, summed over the
// CPUs.
func Count(m *ebpf.Map, i uint32) (uint64, error) {
	var perCPU []uint64
	if err := m.Lookup(i, &perCPU); err != nil {
		return 0, err
	}
	var sum uint64
	for _, n := range perCPU {
		sum += n
	}
	return sum, nil
}

// Monotonic returns the time on the clock the programs read
// (CLOCK_MONOTONIC, bpf_ktime_get_ns): their timestamps and the deadlines
// given them are on it.
func Monotonic() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}
