package handover

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/bpf/bpftest"
)

// fakeProgram is a loaded program that attaches nowhere for real.
type fakeProgram struct {
	fakeMap
	attached map[int]bool
	closed   bool
}

func newFakeProgram() *fakeProgram {
	return &fakeProgram{fakeMap: fakeMap{entries: map[Key]Entry{}, usage: map[Key]Usage{}}, attached: map[int]bool{}}
}

func (p *fakeProgram) Attach(i int) error { p.attached[i] = true; return nil }
func (p *fakeProgram) Detach(i int) error { delete(p.attached, i); return nil }
func (p *fakeProgram) Outcomes() (map[string]uint64, error) {
	return map[string]uint64{"handed": 3}, nil
}
func (p *fakeProgram) Close() error { p.closed = true; return nil }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestOpenUnavailable: a program that cannot be loaded leaves the host
// handing nothing over, and the status says why.
func TestOpenUnavailable(t *testing.T) {
	t.Parallel()
	h := New(DefaultConfig(), "a", 100, &source{served, clients(3)}, quiet())
	h.load = func(int) (program, error) { return nil, errors.New("operation not permitted") }
	h.Open()
	h.Update(view("a", host("a", false, "alive")))
	s := h.Status()
	if s.Active || s.Error != "operation not permitted" || !strings.HasPrefix(s.Summary(), "OFF, moves reset open connections: operation not permitted") {
		t.Errorf("status: %+v, %q", s, s.Summary())
	}
	if !bpftest.CanLoad() {
		// The real loader says so too, without the capabilities.
		if _, err := LoadProgram(0); err == nil || !strings.HasPrefix(err.Error(), "load handover program: ") {
			t.Errorf("LoadProgram without CAP_BPF: %v", err)
		}
	}
}

// TestOpenAttachRun: the loaded program goes on every interface that
// serves a VIP (an interface that does not exist is reported), comes off
// those no longer served, and Run unloads it when it ends.
func TestOpenAttachRun(t *testing.T) {
	t.Parallel()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skip("no lo here")
	}
	src := &source{served: []ServedVIP{
		{VIP: vip, Interface: "lo", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 'a'}},
		{VIP: netip.MustParseAddr("198.18.0.201"), Interface: "nosuch0"},
	}}
	p := newFakeProgram()
	h := New(DefaultConfig(), "a", 100, src, quiet())
	h.load = func(int) (program, error) { return p, nil }
	h.Open()
	s := h.Status()
	if !s.Active || !slices.Equal(s.Interfaces, []string{"lo"}) || s.Unattached["nosuch0"] == "" || !p.attached[lo.Index] {
		t.Errorf("after open: %+v, attached %v", s, p.attached)
	}
	if s.Packets["handed"] != 3 || !strings.Contains(s.Summary(), "OFF on nosuch0") {
		t.Errorf("status: %+v, %q", s, s.Summary())
	}

	src.served = src.served[1:] // lo serves nothing now
	h.Update(nil)
	if p.attached[lo.Index] || len(h.Status().Interfaces) != 0 {
		t.Errorf("still on lo: %v", p.attached)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !p.closed || h.Status().Active {
		t.Errorf("after Run: closed %v, active %v", p.closed, h.Status().Active)
	}
	if h.String() != "handover" {
		t.Error(h.String())
	}
}

// countingSource counts how often a sweep asks how many clients there are.
type countingSource struct {
	*source
	lens atomic.Int64
}

func (s *countingSource) Len() int { s.lens.Add(1); return s.source.Len() }

// TestRunSweepsOnlyWithWork: at rest (nothing handed over, every VIP looked
// at, every interface attached) Run does nothing until something happens:
// a link change re-attaches the program, and moved clients are swept every
// interval until their entries end.
func TestRunSweepsOnlyWithWork(t *testing.T) {
	t.Parallel()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skip("no lo here")
	}
	cs := clients(60)
	src := &countingSource{source: &source{served: []ServedVIP{{VIP: vip, Policy: hash, Interface: "lo", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 'b'}}}, clients: cs}}
	p := newFakeProgram()
	links := make(chan netlink.LinkUpdate)
	h := New(Config{Enabled: true, Grace: 10 * time.Minute, Idle: 2 * time.Minute}, "b", 100, src, quiet())
	h.load = func(int) (program, error) { return p, nil }
	h.watch = func(context.Context) (<-chan netlink.LinkUpdate, error) { return links, nil }
	h.every = 5 * time.Millisecond
	h.Open()
	all := view("b", host("a", false, gossip.StateAlive), host("b", false, gossip.StateAlive))
	h.primed[vip] = true // an old member of the cluster: nothing moved here
	h.Update(all)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	time.Sleep(40 * h.every)
	if n := src.lens.Load(); n != 0 {
		t.Errorf("swept %d times at rest", n)
	}

	// The interface made anew: a new index.
	h.mu.Lock()
	delete(p.attached, lo.Index)
	h.ifaces["lo"] = -1
	h.mu.Unlock()
	links <- netlink.LinkUpdate{}
	waitFor(t, "the program attached again", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return p.attached[lo.Index] && h.ifaces["lo"] == lo.Index
	})

	h.Update(view("b", host("a", true, gossip.StateAlive), host("b", false, gossip.StateAlive)))
	if len(h.Status().Clients) == 0 {
		t.Fatal("test setup: nothing handed over")
	}
	waitFor(t, "sweeps while clients are handed over", func() bool { return src.lens.Load() >= 3 })
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
