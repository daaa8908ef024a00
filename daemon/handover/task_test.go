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
	"testing"

	"github.com/arpshare/arpshare/internal/bpftest"
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
	src := &source{served: []Served{
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
