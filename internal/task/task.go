package task

import (
	"context"
	"fmt"
	"log/slog"

	"golang.org/x/sync/errgroup"
)

// Task is a long-running part of the daemon: gossip, the repointer, the
// handover, the API, the metrics server, the reloader, the watchdog, and the
// responders and health checks that the config asks for.
type Task interface {
	// Run works until ctx ends.
	Run(ctx context.Context) error
	// Ready is closed once the task does its job.
	Ready() <-chan struct{}
	String() string
}

// supervisor runs every task of the daemon under one errgroup, as corerad
// does. The daemon's own tasks run for its whole life, and the failure of
// one stops them all; the responders and health checks come and go with
// the config (apply starts and stops them), and the failure of one is
// logged while the others go on serving.
type Supervisor struct {
	log *slog.Logger
	ctx context.Context // ends when any of the daemon's own tasks fails
	g   *errgroup.Group
}

func NewSupervisor(ctx context.Context, log *slog.Logger) *Supervisor {
	g, gctx := errgroup.WithContext(ctx)
	return &Supervisor{log: log, ctx: gctx, g: g}
}

// Context ends when any of the daemon's own tasks fails.
func (s *Supervisor) Context() context.Context { return s.ctx }

// Go runs t for the daemon's life.
func (s *Supervisor) Go(t Task) {
	s.g.Go(func() error {
		if err := t.Run(s.ctx); err != nil {
			return fmt.Errorf("%s: %w", t, err)
		}
		return nil
	})
}

// running is a task started by apply, until it is stopped.
type Running[T Task] struct {
	t      T
	cancel context.CancelFunc
}

// Task is the task that runs.
func (r *Running[T]) Task() T { return r.t }

// stop ends the task; it does not wait for it (the supervisor's wait
// does).
func (r *Running[T]) Stop() { r.cancel() }

// start runs t until it is stopped or the daemon stops.
func Start[T Task](s *Supervisor, t T) *Running[T] {
	ctx, cancel := context.WithCancel(s.ctx)
	r := &Running[T]{t: t, cancel: cancel}
	s.g.Go(func() error {
		if err := t.Run(ctx); err != nil {
			s.log.Error("task failed", "task", t.String(), "error", err)
		}
		return nil
	})
	return r
}

// ready waits until every one of tasks is ready, and says whether they all
// are: false if ctx ends or a task fails first.
func (s *Supervisor) Ready(ctx context.Context, tasks ...Task) bool {
	for _, t := range tasks {
		select {
		case <-t.Ready():
		case <-s.ctx.Done():
			return false
		case <-ctx.Done():
			return false
		}
	}
	return ctx.Err() == nil && s.ctx.Err() == nil
}

// failed is closed when a task of the daemon's life has failed (or the
// daemon stops).
func (s *Supervisor) Failed() <-chan struct{} { return s.ctx.Done() }

// wait waits for every task and returns the first failure.
func (s *Supervisor) Wait() error { return s.g.Wait() }

// startedTask is a task that is ready as soon as it runs.
type startedTask struct {
	t interface {
		Run(context.Context) error
		String() string
	}
	ready chan struct{}
}

func ReadyOnStart(t interface {
	Run(context.Context) error
	String() string
}) *startedTask {
	return &startedTask{t: t, ready: make(chan struct{})}
}

func (s *startedTask) Run(ctx context.Context) error {
	close(s.ready)
	return s.t.Run(ctx)
}
func (s *startedTask) Ready() <-chan struct{} { return s.ready }
func (s *startedTask) String() string         { return s.t.String() }
