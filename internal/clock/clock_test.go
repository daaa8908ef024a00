package clock

import (
	"context"
	"testing"
	"time"
)

func TestSleep(t *testing.T) {
	t.Parallel()
	if !Sleep(context.Background(), time.Millisecond) {
		t.Error("Sleep with a live context = false, want true")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// An hour would hang the test if the ended context were ignored.
	if Sleep(ctx, time.Hour) {
		t.Error("Sleep with an ended context = true, want false")
	}
	if (Real{}).Sleep(ctx, time.Hour) {
		t.Error("Real.Sleep with an ended context = true, want false")
	}
}

func TestRealTicker(t *testing.T) {
	t.Parallel()
	tk := Real{}.NewTicker(time.Millisecond)
	defer tk.Stop()
	before := Real{}.Now()
	// Waits for a tick, however late it comes: no bound on when.
	if at := <-tk.C(); at.Before(before.Add(-time.Second)) {
		t.Errorf("tick at %v, before the ticker was made (%v)", at, before)
	}
}
