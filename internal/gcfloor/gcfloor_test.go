package gcfloor

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// TestStart: with a small live heap, the collector's goal is raised to
// growth past it after a collection; with a live heap larger than growth,
// it is GOGC's 100 %.
func TestStart(t *testing.T) {
	t.Setenv("GOGC", "")
	defer debug.SetGCPercent(100)
	const growth = 64 << 20
	defer Start(growth)()
	waitPercent := func(ok func(int) bool) int {
		deadline := time.Now().Add(5 * time.Second)
		for {
			runtime.GC()
			time.Sleep(10 * time.Millisecond) // the finalizer runs on its own goroutine
			if p := gcPercent(); ok(p) || time.Now().After(deadline) {
				return p
			}
		}
	}
	if p, live := waitPercent(func(p int) bool { return p > 100 }), liveHeap(); p < 200 || uint64(p)*live/100 < growth/2 {
		t.Errorf("live heap %d bytes: GOGC %d, want room for about %d bytes of growth", live, p, growth)
	}
	big := make([][]byte, 0, 16)
	for range 12 {
		big = append(big, make([]byte, 8<<20))
	}
	if p := waitPercent(func(p int) bool { return p == 100 }); p != 100 {
		t.Errorf("live heap %d bytes, more than the growth: GOGC %d, want 100", liveHeap(), p)
	}
	runtime.KeepAlive(big)
}

func TestPercent(t *testing.T) {
	for _, tt := range []struct {
		growth, live uint64
		want         int
	}{
		{24 << 20, 3 << 20, 800},
		{24 << 20, 24 << 20, 100},
		{24 << 20, 100 << 20, 100},
		{24 << 20, 0, 100},
		{24 << 20, 1 << 20, 2400},
		{24 << 20, 1<<20 + 1000, 2300},
	} {
		if got := percent(tt.growth, tt.live); got != tt.want {
			t.Errorf("percent(%d, %d) = %d, want %d", tt.growth, tt.live, got, tt.want)
		}
	}
}

// TestEnvironment: GOGC in the environment wins.
func TestEnvironment(t *testing.T) {
	t.Setenv("GOGC", "100")
	defer debug.SetGCPercent(100)
	defer Start(1 << 30)()
	runtime.GC()
	time.Sleep(50 * time.Millisecond)
	if p := gcPercent(); p != 100 {
		t.Errorf("GOGC=100 in the environment: GOGC %d", p)
	}
}
