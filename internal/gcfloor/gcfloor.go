// Package gcfloor keeps Go's garbage collector from running more often than
// a daemon with a small heap needs.
package gcfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
)

// Growth is how far the heap may grow past what is live before a
// collection, at least: GOGC's 100 % of a small live heap (a few MiB at
// rest) means a collection for every few MiB that memberlist allocates (a
// 64 KiB buffer for every datagram it receives, and an LZW compressor for
// every one it sends, before gossip turned compression off): about one a second at rest, and so many in a lab of 64
// hosts starting up that the collector took a third of the daemons' CPU and
// the lab never settled. Above Growth of live heap (a large client table),
// GOGC's own 100 % applies, and the heap's peak is the same as without.
const Growth = 24 << 20

// Start keeps the collector's goal at least growth bytes above the live
// heap, until stop: after every collection it sets GOGC to the percentage
// of the live heap that growth is (100 at least). It does nothing if GOGC
// is set in the environment: that is the operator's choice.
func Start(growth uint64) (stop func()) {
	if os.Getenv("GOGC") != "" {
		return func() {}
	}
	var stopped atomic.Bool
	last := -1
	var tune func()
	tune = func() {
		if stopped.Load() {
			return
		}
		if pct := percent(growth, liveHeap()); pct != last {
			debug.SetGCPercent(pct)
			last = pct
		}
		arm(tune)
	}
	tune()
	return func() { stopped.Store(true) }
}

// percent is the GOGC that lets a heap of live bytes grow by growth
// bytes, and by 100 % at least.
func percent(growth, live uint64) int {
	if live == 0 {
		return 100
	}
	// Rounded to a tenth, so that a live heap that wobbles a little does
	// not set it after every collection.
	p := int(growth * 100 / live)
	if p > 1000 {
		p = p / 100 * 100
	}
	return max(100, p)
}

func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// sentinel is collected at the next collection: its finalizer runs once
// per collection. It is larger than the tiny allocator's 16 bytes, whose
// objects may share a block and never be finalized.
type sentinel struct{ _ [32]byte }

// arm calls f after the next collection.
func arm(f func()) {
	s := new(sentinel)
	runtime.SetFinalizer(s, func(*sentinel) { f() })
}
