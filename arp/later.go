package arp

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// maxLater bounds the race mode's answers waiting for their delay: at most
// 20 ms each (policy's jitter), so 4,096 is a flood of 200,000 requests a
// second; beyond it answers are dropped, as the socket would drop frames.
const maxLater = 4096

// later sends the race mode's delayed answers, on one goroutine that the
// responder's Run owns: none is sent once the responder stops, none has a
// timer of its own, and no more than maxLater wait at once.
type later struct {
	mu    sync.Mutex
	queue laterQueue
	wake  chan struct{}
}

type laterItem struct {
	due  time.Time
	send func()
}

type laterQueue []laterItem

func (q laterQueue) Len() int           { return len(q) }
func (q laterQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q laterQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *laterQueue) Push(x any)        { *q = append(*q, x.(laterItem)) }
func (q *laterQueue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}

func newLater() *later { return &later{wake: make(chan struct{}, 1)} }

// add sends send at due, and says whether it was taken (false: full).
func (l *later) add(due time.Time, send func()) bool {
	l.mu.Lock()
	if len(l.queue) >= maxLater {
		l.mu.Unlock()
		return false
	}
	heap.Push(&l.queue, laterItem{due: due, send: send})
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return true
}

// due takes the items due at now, and says when the next one is (zero:
// none waits).
func (l *later) due(now time.Time) ([]func(), time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []func()
	for len(l.queue) > 0 && !l.queue[0].due.After(now) {
		out = append(out, heap.Pop(&l.queue).(laterItem).send)
	}
	if len(l.queue) == 0 {
		return out, time.Time{}
	}
	return out, l.queue[0].due
}

// run sends what is due until ctx ends, and then forgets the rest.
func (l *later) run(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer func() {
		t.Stop()
		l.mu.Lock()
		l.queue = nil
		l.mu.Unlock()
	}()
	for {
		sends, next := l.due(time.Now())
		for _, send := range sends {
			send()
		}
		var timer <-chan time.Time
		if !next.IsZero() {
			t.Reset(time.Until(next))
			timer = t.C
		}
		select {
		case <-ctx.Done():
			return
		case <-l.wake:
		case <-timer:
		}
		t.Stop()
	}
}
