package clocktest

import (
	"context"
	"testing"
	"time"
)

var start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestTicker(t *testing.T) {
	t.Parallel()
	f := New(start)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waited := make(chan error)
	go func() { waited <- f.WaitTickers(ctx, 1) }()
	tk := f.NewTicker(time.Second)
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	defer tk.Stop()
	f.Advance(999 * time.Millisecond)
	select {
	case at := <-tk.C():
		t.Fatalf("ticked at %v before its interval", at)
	default:
	}
	f.Advance(time.Millisecond)
	if at := <-tk.C(); !at.Equal(start.Add(time.Second)) {
		t.Errorf("tick at %v, want %v", at, start.Add(time.Second))
	}
	// Three intervals at once: one tick, the others dropped, as a
	// time.Ticker whose reader is late.
	f.Advance(3 * time.Second)
	if at := <-tk.C(); !at.Equal(start.Add(4 * time.Second)) {
		t.Errorf("tick at %v, want %v", at, start.Add(4*time.Second))
	}
	select {
	case at := <-tk.C():
		t.Errorf("a second tick %v for one advance", at)
	default:
	}
	f.Advance(500 * time.Millisecond) // the next is at start+5s
	select {
	case at := <-tk.C():
		t.Errorf("ticked at %v, between intervals", at)
	default:
	}
	tk.Stop()
	f.Advance(time.Minute)
	select {
	case at := <-tk.C():
		t.Errorf("a stopped ticker ticked at %v", at)
	default:
	}
}

func TestSleep(t *testing.T) {
	t.Parallel()
	f := New(start)
	done := make(chan bool)
	go func() { done <- f.Sleep(context.Background(), time.Second) }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := f.WaitSleepers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	f.Advance(999 * time.Millisecond)
	if n := f.Sleepers(); n != 1 {
		t.Fatalf("%d sleepers before the sleep's end, want 1", n)
	}
	f.Advance(time.Millisecond)
	if !<-done {
		t.Error("Sleep = false, want true")
	}
	if n := f.Sleepers(); n != 0 {
		t.Errorf("%d sleepers after the sleep ended", n)
	}
	if got := f.Now(); !got.Equal(start.Add(time.Second)) {
		t.Errorf("Now = %v, want %v", got, start.Add(time.Second))
	}

	ended, end := context.WithCancel(context.Background())
	go func() { done <- f.Sleep(ended, time.Hour) }()
	if err := f.WaitSleepers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	end()
	if <-done {
		t.Error("Sleep with an ended context = true, want false")
	}
	if n := f.Sleepers(); n != 0 {
		t.Errorf("%d sleepers after the context ended", n)
	}
	short, stop := context.WithTimeout(context.Background(), time.Millisecond)
	defer stop()
	if err := f.WaitSleepers(short, 1); err == nil {
		t.Error("WaitSleepers with nobody asleep returned no error")
	}
}
