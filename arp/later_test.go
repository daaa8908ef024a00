package arp

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestLater: delayed answers go out in the order they are due, on the
// scheduler's goroutine; beyond maxLater waiting, add refuses; once the
// context ends, what waits is never sent.
func TestLater(t *testing.T) {
	t.Parallel()
	l := newLater()
	var mu sync.Mutex
	var got []int
	sent := func(i int) func() { return func() { mu.Lock(); got = append(got, i); mu.Unlock() } }
	now := time.Now()
	for _, i := range []int{3, 1, 2} {
		if !l.add(now.Add(time.Duration(i)*10*time.Millisecond), sent(i)) {
			t.Fatal("add refused with room")
		}
	}
	l.add(now.Add(time.Hour), sent(99)) // never due in this test
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("sent %v, want [1 2 3]", got)
	}
	if len(l.queue) != 0 {
		t.Errorf("%d left waiting after the context ended", len(l.queue))
	}
	full := newLater()
	for range maxLater {
		full.add(now.Add(time.Hour), func() {})
	}
	if full.add(now, func() {}) {
		t.Errorf("add took a delayed answer beyond %d", maxLater)
	}
}
