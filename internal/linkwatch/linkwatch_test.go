package linkwatch

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arpshare/arpshare/internal/config"
)

func TestLinkProblem(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		l    Link
		want string
	}{
		{Link{Up: true, Carry: true, Oper: "up"}, ""},
		{Link{Up: true, Carry: true, Oper: "unknown"}, ""}, // a dummy or tun has no operstate
		{Link{Up: false, Carry: false, Oper: "down"}, "down"},
		{Link{Up: true, Carry: false, Oper: "down"}, "no carrier"},
		{Link{Up: true, Carry: false, Oper: "lower-layer-down"}, "no carrier (lower link down)"}, // a VLAN or bond over a failed link
		{Link{Up: true, Carry: false, Oper: "dormant"}, "no carrier"},
	} {
		if got := c.l.problem(); got != c.want {
			t.Errorf("%+v: problem %q, want %q", c.l, got, c.want)
		}
	}
}

// listed records what the kernel's link feed reports.
type listed struct {
	mu    sync.Mutex
	links []Link
	lo    int
}

func (l *listed) LinksListed(all []Link) { l.mu.Lock(); l.links = all; l.mu.Unlock() }
func (l *listed) LinkChanged(Link)       {}
func (l *listed) LinkGone(int)           {}
func (l *listed) LoChanged()             { l.mu.Lock(); l.lo++; l.mu.Unlock() }

// TestKernelLinksWatch: the kernel's feed lists the links of this
// namespace (lo among them, up) and lo's addresses, and Watch returns
// once its context ends (a feed left undrained would hang the daemon's
// stop). It only reads.
func TestKernelLinksWatch(t *testing.T) {
	t.Parallel()
	var got listed
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Kernel{}.Watch(ctx, &got) }()
	eventually(t, "the links listed", func() bool {
		got.mu.Lock()
		defer got.mu.Unlock()
		return got.lo > 0 && slices.ContainsFunc(got.links, func(l Link) bool { return l.Name == "lo" && l.Up })
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after its context ended")
	}
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

// fakeSource lists test0 up, then passes on what the test sends.
type fakeSource struct {
	events chan func(Events)
	lo     []netip.Addr
}

func (s *fakeSource) Watch(ctx context.Context, to Events) error {
	to.LinksListed([]Link{{Index: 1, Name: "lo", Up: true, Carry: true}, {Index: 2, Name: "test0", Up: true, Carry: true, Oper: "up"}})
	to.LoChanged()
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-s.events:
			f(to)
		}
	}
}

func (s *fakeSource) LoAddrs() ([]netip.Addr, error) { return s.lo, nil }

// fakeHost records what the watch publishes.
type fakeHost struct {
	cfg     *config.Config
	mu      sync.Mutex
	faults  map[netip.Addr]string
	told    int
	reopens []string
}

func (h *fakeHost) Config() *config.Config { return h.cfg }
func (h *fakeHost) SetLinkFaults(f map[netip.Addr]string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults = f
}
func (h *fakeHost) FaultsChanged() { h.mu.Lock(); h.told++; h.mu.Unlock() }
func (h *fakeHost) RestoreVIPs(list func() ([]netip.Addr, error)) (map[netip.Addr]error, error) {
	on, err := list()
	failed := map[netip.Addr]error{}
	for _, v := range h.cfg.VIPs {
		if !slices.Contains(on, v.Address) {
			failed[v.Address] = errors.New("refused")
		}
	}
	return failed, err
}
func (h *fakeHost) Reopen(iface string) {
	h.mu.Lock()
	h.reopens = append(h.reopens, iface)
	h.mu.Unlock()
}

func (h *fakeHost) fault(vip netip.Addr) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.faults[vip]
}

// TestWatchFaults: a VIP's fault follows its socket, its link and lo, each
// change is told to the host, and a link that goes away reopens its
// responders.
func TestWatchFaults(t *testing.T) {
	t.Parallel()
	web := config.VIP{Name: "web", Address: netip.MustParseAddr("198.18.0.200"), Interface: "test0"}
	h := &fakeHost{cfg: &config.Config{VIPs: []config.VIP{web}}}
	src := &fakeSource{events: make(chan func(Events)), lo: []netip.Addr{web.Address}}
	w := New(slog.New(slog.DiscardHandler), src, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-w.Ready()
	want := func(what, fault string) {
		t.Helper()
		eventually(t, what, func() bool { return h.fault(web.Address) == fault })
	}
	want("socket not open", "link test0: ARP not open yet")
	w.Opened(KeyOf(web))
	want("serving", "")
	if err := w.Usable("test0"); err != nil {
		t.Errorf("Usable(test0): %v", err)
	}
	src.events <- func(to Events) { to.LinkChanged(Link{Index: 2, Name: "test0", Up: true, Oper: "lower-layer-down"}) }
	want("no carrier", "link test0: no carrier (lower link down)")
	if err := w.Usable("test0"); err == nil {
		t.Error("Usable(test0) without carrier: nil")
	}
	src.events <- func(to Events) { to.LinkGone(2) }
	want("gone", "link test0: missing")
	eventually(t, "reopened", func() bool { h.mu.Lock(); defer h.mu.Unlock(); return slices.Equal(h.reopens, []string{"test0"}) })
	src.events <- func(to Events) { to.LinkChanged(Link{Index: 3, Name: "test0", Up: true, Carry: true, Oper: "up"}) }
	want("back", "")
	src.lo = nil
	src.events <- func(to Events) { to.LoChanged() }
	want("off lo", "VIP 198.18.0.200 not on lo: refused")
	w.Closed(KeyOf(web), "socket failed: boom")
	src.lo = []netip.Addr{web.Address}
	src.events <- func(to Events) { to.LoChanged() }
	want("socket failed", "link test0: ARP socket failed: boom")
	h.mu.Lock()
	told := h.told
	h.mu.Unlock()
	if told == 0 {
		t.Error("the host was never told of a change")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(w)
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 2 {
		t.Errorf("link metrics: %d families, %v; want 2", len(mfs), err)
	}
}

// TestWaitLink: a responder waits for its link to come up, and stops
// waiting when its context ends.
func TestWaitLink(t *testing.T) {
	t.Parallel()
	h := &fakeHost{cfg: &config.Config{}}
	src := &fakeSource{events: make(chan func(Events))}
	w := New(slog.New(slog.DiscardHandler), src, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-w.Ready()
	waited := make(chan error, 1)
	go func() { waited <- w.WaitLink(ctx, "test1") }()
	select {
	case err := <-waited:
		t.Fatalf("WaitLink returned %v for a missing link", err)
	case <-time.After(50 * time.Millisecond):
	}
	src.events <- func(to Events) { to.LinkChanged(Link{Index: 4, Name: "test1", Up: true, Carry: true, Oper: "up"}) }
	if err := <-waited; err != nil {
		t.Errorf("WaitLink: %v", err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	go func() { waited <- w.WaitLink(wctx, "test2") }()
	wcancel()
	if err := <-waited; !errors.Is(err, context.Canceled) {
		t.Errorf("WaitLink after cancel: %v", err)
	}
}
