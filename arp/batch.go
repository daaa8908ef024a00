package arp

import (
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BatchReader is a Conn that can read several frames with one system call.
type BatchReader interface {
	// ReadBatch reads up to len(bufs) frames, at least one, into bufs and
	// their lengths into sizes, and returns how many it read. Every call
	// must pass the same bufs.
	ReadBatch(bufs [][]byte, sizes []int) (int, error)
}

var _ BatchReader = (*rawConn)(nil)

// mmsghdr is struct mmsghdr of recvmmsg(2), which x/sys/unix lacks.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// batch is the state of rawConn's batched reads, made once: a read
// allocates nothing.
type batch struct {
	rc   syscall.RawConn
	msgs []mmsghdr
	iovs []unix.Iovec
	read func(fd uintptr) bool // the recvmmsg call, with its results below
	n    int
	err  error
}

// ReadBatch reads with recvmmsg(2), through Go's network poller: when the
// interface is busy, one wake-up and one system call bring in up to
// len(bufs) frames; when it is quiet, it costs what a plain read does.
func (r *rawConn) ReadBatch(bufs [][]byte, sizes []int) (int, error) {
	b := r.batch
	if b == nil {
		var err error
		if b, err = r.newBatch(bufs); err != nil {
			return 0, err
		}
		r.batch = b
	}
	if len(bufs) != len(b.msgs) || &bufs[0][0] != b.iovs[0].Base {
		return 0, errors.New("ReadBatch: buffers changed")
	}
	if err := b.rc.Read(b.read); err != nil {
		return 0, err
	}
	if b.err != nil {
		return 0, fmt.Errorf("recvmmsg: %w", b.err)
	}
	for i := range b.n {
		sizes[i] = int(b.msgs[i].len)
	}
	return b.n, nil
}

// newBatch sets up the batched reads into bufs.
func (r *rawConn) newBatch(bufs [][]byte) (*batch, error) {
	rc, err := r.c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("raw ARP socket: %w", err)
	}
	b := &batch{rc: rc, msgs: make([]mmsghdr, len(bufs)), iovs: make([]unix.Iovec, len(bufs))}
	for i, buf := range bufs {
		b.iovs[i].Base = &buf[0]
		b.iovs[i].SetLen(len(buf))
		b.msgs[i].hdr.Iov = &b.iovs[i]
		b.msgs[i].hdr.SetIovlen(1)
	}
	b.read = func(fd uintptr) bool {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(len(b.msgs)), unix.MSG_DONTWAIT, 0, 0)
		if errno == unix.EAGAIN || errno == unix.EINTR {
			return false // the poller waits for the next frame
		}
		b.n, b.err = int(n), nil
		if errno != 0 {
			b.n, b.err = 0, errno
		}
		return true
	}
	return b, nil
}
