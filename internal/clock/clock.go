// Package clock holds the one way arpshare waits: a sleep that ends early
// when its context does; and Clock, the time a component's own decisions
// read, so that tests can drive those decisions step by step (see
// clocktest) while the real clock runs in production.
package clock

import (
	"context"
	"time"
)

// Sleep waits for d, or until ctx ends; it reports whether the whole d
// passed (false: ctx ended first, and the caller should stop).
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Clock is where a component reads the time, ticks and waits.
type Clock interface {
	Now() time.Time
	// NewTicker ticks every d, as time.NewTicker: a tick the reader is
	// not ready for is dropped.
	NewTicker(d time.Duration) Ticker
	// Sleep waits for d, or until ctx ends, as the package's Sleep.
	Sleep(ctx context.Context, d time.Duration) bool
}

// Ticker is a time.Ticker of a Clock.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Real is the machine's clock.
type Real struct{}

var _ Clock = Real{}

// Now is time.Now.
func (Real) Now() time.Time { return time.Now() }

// NewTicker is time.NewTicker.
func (Real) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

// Sleep is the package's Sleep.
func (Real) Sleep(ctx context.Context, d time.Duration) bool { return Sleep(ctx, d) }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }
