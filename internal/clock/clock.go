// Package clock holds the one way arpshare waits: a sleep that ends early
// when its context does.
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
