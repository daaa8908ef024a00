package task

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// funcTask is a task made of a function; it is ready at once.
type funcTask struct {
	name  string
	run   func(ctx context.Context) error
	ready chan struct{}
}

func newFuncTask(name string, run func(ctx context.Context) error) *funcTask {
	t := &funcTask{name: name, run: run, ready: make(chan struct{})}
	close(t.ready)
	return t
}

func (t *funcTask) Run(ctx context.Context) error { return t.run(ctx) }
func (t *funcTask) Ready() <-chan struct{}        { return t.ready }
func (t *funcTask) String() string                { return t.name }

// TestSupervisor: a task started by apply that fails is logged and the
// others go on; one of the daemon's life that fails stops them all, and
// wait names it; a stopped task ends.
func TestSupervisor(t *testing.T) {
	t.Parallel()
	log := &logBuffer{}
	s := NewSupervisor(context.Background(), slog.New(slog.NewTextHandler(log, nil)))
	blocked := func(ctx context.Context) error { <-ctx.Done(); return nil }

	Start(s, newFuncTask("responder on test0", func(context.Context) error { return errors.New("socket: operation not permitted") }))
	stopped := make(chan struct{})
	r := Start(s, newFuncTask("health check", func(ctx context.Context) error { <-ctx.Done(); close(stopped); return nil }))
	s.Go(newFuncTask("gossip", blocked))
	eventually(t, "the failure logged", func() bool { return strings.Contains(log.String(), "socket: operation not permitted") })
	if !s.Ready(context.Background(), newFuncTask("ready", blocked)) {
		t.Fatal("a dynamic task's failure stopped the supervisor")
	}
	r.Stop()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("a stopped task runs on")
	}

	s.Go(newFuncTask("api", func(context.Context) error { return errors.New("listen: address in use") }))
	select {
	case <-s.Failed():
	case <-time.After(10 * time.Second):
		t.Fatal("a failed task of the daemon's life did not stop the supervisor")
	}
	if err := s.Wait(); err == nil || err.Error() != "api: listen: address in use" {
		t.Errorf("wait: %v", err)
	}
	if s.Ready(context.Background(), newFuncTask("late", blocked)) {
		t.Error("ready after a failure")
	}
}

// TestReadyOnStart: a task without readiness of its own is ready once it
// runs.
func TestReadyOnStart(t *testing.T) {
	t.Parallel()
	ran := make(chan struct{})
	task := ReadyOnStart(newFuncTask("watchdog", func(context.Context) error { close(ran); return nil }))
	select {
	case <-task.Ready():
		t.Fatal("ready before it runs")
	default:
	}
	if err := task.Run(context.Background()); err != nil || task.String() != "watchdog" {
		t.Fatal(err, task.String())
	}
	<-ran
	select {
	case <-task.Ready():
	default:
		t.Error("not ready after it ran")
	}
}

// logBuffer collects a log for the test to read.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// eventually waits up to 10 s for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
