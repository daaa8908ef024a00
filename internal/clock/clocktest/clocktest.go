// Package clocktest is a clock.Clock for tests: its time moves only when
// the test advances it, so that time-based decisions are driven step by
// step, however busy the machine running the test is.
package clocktest

import (
	"context"
	"sync"
	"time"

	"github.com/arpshare/arpshare/internal/clock"
)

// Fake is a clock whose time moves only by Advance.
type Fake struct {
	mu       sync.Mutex
	now      time.Time
	tickers  []*ticker
	sleepers []*sleeper
	// changed is closed, and replaced, whenever a goroutine starts to
	// sleep or a ticker is made: WaitSleepers and WaitTickers wait on it.
	changed chan struct{}
}

var _ clock.Clock = (*Fake)(nil)

// New returns a fake clock that reads start until advanced.
func New(start time.Time) *Fake {
	return &Fake{now: start, changed: make(chan struct{})}
}

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Advance moves the time on by d: each ticker whose time came ticks once,
// with the new time (as a time.Ticker sends the time it fires at, and drops
// a tick its reader is not ready for), and each sleep that ends by then
// returns.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	for _, t := range f.tickers {
		if t.next.After(f.now) {
			continue
		}
		for !t.next.After(f.now) {
			t.next = t.next.Add(t.period)
		}
		select {
		case t.c <- f.now:
		default:
		}
	}
	keep := f.sleepers[:0]
	for _, s := range f.sleepers {
		if s.until.After(f.now) {
			keep = append(keep, s)
			continue
		}
		close(s.done)
	}
	clear(f.sleepers[len(keep):])
	f.sleepers = keep
}

type ticker struct {
	f      *Fake
	period time.Duration
	next   time.Time
	c      chan time.Time
}

// NewTicker returns a ticker that ticks every d of fake time.
func (f *Fake) NewTicker(d time.Duration) clock.Ticker {
	if d <= 0 {
		panic("clocktest: non-positive interval for NewTicker")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &ticker{f: f, period: d, next: f.now.Add(d), c: make(chan time.Time, 1)}
	f.tickers = append(f.tickers, t)
	f.notify()
	return t
}

func (t *ticker) C() <-chan time.Time { return t.c }

func (t *ticker) Stop() {
	f := t.f
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, o := range f.tickers {
		if o == t {
			f.tickers = append(f.tickers[:i], f.tickers[i+1:]...)
			return
		}
	}
}

type sleeper struct {
	until time.Time
	done  chan struct{}
}

// Sleep waits until the fake time has moved on by d, or until ctx ends.
func (f *Fake) Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	f.mu.Lock()
	s := &sleeper{until: f.now.Add(d), done: make(chan struct{})}
	f.sleepers = append(f.sleepers, s)
	f.notify()
	f.mu.Unlock()
	select {
	case <-s.done:
		return true
	case <-ctx.Done():
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, o := range f.sleepers {
			if o == s {
				f.sleepers = append(f.sleepers[:i], f.sleepers[i+1:]...)
				break
			}
		}
		return false
	}
}

// notify wakes the waits for sleepers and tickers. Call with mu held.
func (f *Fake) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Sleepers returns how many goroutines sleep on the clock.
func (f *Fake) Sleepers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sleepers)
}

// WaitSleepers waits until at least n goroutines sleep on the clock, or
// until ctx ends (then it returns ctx's error): a test advances the clock
// once the goroutine it drives has come to its next wait.
func (f *Fake) WaitSleepers(ctx context.Context, n int) error {
	return f.wait(ctx, func() bool { return len(f.sleepers) >= n })
}

// WaitTickers waits until at least n tickers run on the clock, or until
// ctx ends (then it returns ctx's error): a test advances the clock once
// the loop it drives has made its tickers.
func (f *Fake) WaitTickers(ctx context.Context, n int) error {
	return f.wait(ctx, func() bool { return len(f.tickers) >= n })
}

// wait waits until cond, called with mu held, holds.
func (f *Fake) wait(ctx context.Context, cond func() bool) error {
	for {
		f.mu.Lock()
		ok, changed := cond(), f.changed
		f.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
