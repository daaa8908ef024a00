package daemon

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/config"
	"github.com/arpshare/arpshare/internal/linkwatch"
)

// fakeKernel is a linkSource: the interfaces lo, test0, test1 and test9,
// up with carrier, except those the host's fakeLinks says do not exist when
// the watch starts. Tests change them while the daemon watches.
type fakeKernel struct {
	host   *fakeHost
	fl     *fakeLinks
	events chan func(linkwatch.Events)

	mu    sync.Mutex
	links map[string]linkwatch.Link
}

func newFakeKernel(host *fakeHost, fl *fakeLinks) *fakeKernel {
	return &fakeKernel{host: host, fl: fl, events: make(chan func(linkwatch.Events))}
}

func (k *fakeKernel) Watch(ctx context.Context, to linkwatch.Events) error {
	k.mu.Lock()
	if k.links == nil {
		k.links = map[string]linkwatch.Link{}
		k.fl.mu.Lock()
		for i, name := range []string{"lo", "test0", "test1", "test9"} {
			if !k.fl.down[name] {
				k.links[name] = linkwatch.Link{Index: i + 1, Name: name, Up: true, Carry: true, Oper: "up"}
			}
		}
		k.fl.mu.Unlock()
	}
	var all []linkwatch.Link
	for _, l := range k.links {
		all = append(all, l)
	}
	k.mu.Unlock()
	to.LinksListed(all)
	to.LoChanged()
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-k.events:
			f(to)
		}
	}
}

func (k *fakeKernel) LoAddrs() ([]netip.Addr, error) { return k.host.onLo(), nil }

// set changes a link as the kernel would report it.
func (k *fakeKernel) set(l linkwatch.Link) {
	k.mu.Lock()
	k.links[l.Name] = l
	k.mu.Unlock()
	k.events <- func(to linkwatch.Events) { to.LinkChanged(l) }
}

// remove removes a link.
func (k *fakeKernel) remove(name string) {
	k.mu.Lock()
	l := k.links[name]
	delete(k.links, name)
	k.mu.Unlock()
	k.events <- func(to linkwatch.Events) { to.LinkGone(l.Index) }
}

// loChanged reports a change of lo's addresses.
func (k *fakeKernel) loChanged() { k.events <- func(to linkwatch.Events) { to.LoChanged() } }

// eligibleIn says whether host is eligible for vip in n's view.
func eligibleIn(n *node, host string, vip netip.Addr) bool {
	return slices.ContainsFunc(n.d.cluster.View().Eligible(vip), func(c gossip.Candidate) bool { return c.Name == host })
}

// waitLink waits until h1's link fault for web is want, as its status
// says, and h2 sees h1 eligible for web exactly when want is "".
func waitLink(t *testing.T, h1, h2 *node, want string) {
	t.Helper()
	waitLinkOf(t, h1, h2, web, want)
}

// waitLinkOf is waitLink for the VIP at vip, h1's first.
func waitLinkOf(t *testing.T, h1, h2 *node, vip netip.Addr, want string) {
	t.Helper()
	eventually(t, "h1's link state "+want, func() bool {
		s := h1.d.Status()
		return s.VIPs[0].Address == vip && s.VIPs[0].Link == want && eligibleIn(h2, "h1", vip) == (want == "") &&
			(want == "") == !slices.Contains(s.NotServing, "vip "+s.VIPs[0].Name+": "+want)
	})
}

// TestLinkFaults: a link that is down, without carrier or missing, a
// responder socket that fails and a VIP that cannot be put back on lo each
// make the host ineligible for the VIP in its peer's view, with the reason
// in its status, and eligible again when it is over.
func TestLinkFaults(t *testing.T) {
	t.Parallel()
	c := newCluster("h1", "h2")
	h1, h2 := c.startTwo(t, vipV4, vipV4)
	k := h1.kernel
	waitLink(t, h1, h2, "")

	k.set(linkwatch.Link{Index: 2, Name: "test0", Up: true, Carry: false, Oper: "lower-layer-down"})
	waitLink(t, h1, h2, "link test0: no carrier (lower link down)")
	k.set(linkwatch.Link{Index: 2, Name: "test0", Up: true, Carry: true, Oper: "up"})
	waitLink(t, h1, h2, "")

	k.set(linkwatch.Link{Index: 2, Name: "test0", Oper: "down"})
	waitLink(t, h1, h2, "link test0: down")
	k.set(linkwatch.Link{Index: 2, Name: "test0", Up: true, Carry: true, Oper: "up"})
	waitLink(t, h1, h2, "")

	// Renamed away, then another interface takes the name.
	k.set(linkwatch.Link{Index: 2, Name: "test8", Up: true, Carry: true, Oper: "up"})
	waitLink(t, h1, h2, "link test0: missing")
	k.remove("test8")
	k.set(linkwatch.Link{Index: 7, Name: "test0", Up: true, Carry: true, Oper: "up"})
	waitLink(t, h1, h2, "")

	// The socket fails, and opening it again fails too for a while:
	// ineligible until the responder has reopened it.
	old := h1.links.arpConn("test0")
	h1.links.mu.Lock()
	h1.links.down["test0"] = true
	h1.links.mu.Unlock()
	close(old.In)
	waitLink(t, h1, h2, "link test0: ARP socket failed: link lost")
	h1.links.mu.Lock()
	h1.links.down["test0"] = false
	h1.links.mu.Unlock()
	waitLink(t, h1, h2, "")
	if h1.links.arpConn("test0") == old {
		t.Error("eligible again before the socket was reopened")
	}

	// The sysctls cannot be set as the socket opens again: ineligible
	// until they can.
	h1.host.mu.Lock()
	h1.host.quietErr = errors.New("read-only file system")
	h1.host.mu.Unlock()
	close(h1.links.arpConn("test0").In)
	waitLink(t, h1, h2, "link test0: ARP plumbing failed: interface test0: read-only file system")
	h1.host.mu.Lock()
	h1.host.quietErr = nil
	h1.host.mu.Unlock()
	waitLink(t, h1, h2, "")

	// Someone flushes lo: the VIP is put back at once; one that cannot be
	// put back makes the host ineligible until it can.
	h1.host.RemoveVIP(web)
	k.loChanged()
	eventually(t, "web back on lo", func() bool { return slices.Contains(h1.host.onLo(), web) })
	waitLink(t, h1, h2, "")
	h1.host.RemoveVIP(web)
	h1.host.mu.Lock()
	h1.host.failAdd[web] = errors.New("operation not permitted")
	h1.host.mu.Unlock()
	k.loChanged()
	waitLink(t, h1, h2, "VIP 198.18.0.200 not on lo: add VIP 198.18.0.200 to lo: operation not permitted")
	h1.host.mu.Lock()
	delete(h1.host.failAdd, web)
	h1.host.mu.Unlock()
	k.loChanged()
	waitLink(t, h1, h2, "")
	if !strings.Contains(h1.log.String(), "VIP was taken off lo: put it back") {
		t.Error("the log does not say a VIP was put back on lo")
	}
}

// TestLinkReplacedReopens: an NDP socket is not told that its interface
// went away; when the kernel says so, the responder closes it, and opens
// the interface that has the name once there is one again (a new index).
// A rename away does the same.
func TestLinkReplacedReopens(t *testing.T) {
	t.Parallel()
	c := newCluster("h1", "h2")
	h1, h2 := c.startTwo(t, vipV6, vipV6)
	waitLinkOf(t, h1, h2, web6, "")
	for i, gone := range []func(){
		func() { h1.kernel.remove("test0") },
		func() { h1.kernel.set(linkwatch.Link{Index: 7, Name: "test7", Oper: "down"}) },
	} {
		old := h1.links.ndpConn("test0")
		gone()
		waitLinkOf(t, h1, h2, web6, "link test0: missing")
		eventually(t, "the NDP socket on the old interface closed", old.Closed)
		h1.kernel.set(linkwatch.Link{Index: 7 + i, Name: "test0", Up: true, Carry: true, Oper: "up"})
		waitLinkOf(t, h1, h2, web6, "")
		if c := h1.links.ndpConn("test0"); c == old || c.Closed() {
			t.Fatalf("step %d: serving again without a new socket", i)
		}
	}
}

// TestLinkDownNotReopened: while the kernel says the link is down, a
// responder whose socket failed waits for it without opening a socket;
// once the link is up, it opens one.
func TestLinkDownNotReopened(t *testing.T) {
	t.Parallel()
	c := newCluster("h1", "h2")
	h1, h2 := c.startTwo(t, vipV4, vipV4)
	waitLink(t, h1, h2, "")
	h1.kernel.set(linkwatch.Link{Index: 2, Name: "test0", Oper: "down"})
	waitLink(t, h1, h2, "link test0: down")
	old := h1.links.arpConn("test0")
	close(old.In)
	eventually(t, "a reopen refused", func() bool {
		return strings.Contains(h1.log.String(), "interface not usable, waiting for it") && strings.Contains(h1.log.String(), "link test0: down")
	})
	if c := h1.links.arpConn("test0"); c != old || !c.Closed() || h1.d.Status().VIPs[0].Answering {
		t.Fatal("a socket was opened on a link that is down")
	}
	h1.kernel.set(linkwatch.Link{Index: 2, Name: "test0", Up: true, Carry: true, Oper: "up"})
	waitLink(t, h1, h2, "")
	if h1.links.arpConn("test0") == old {
		t.Error("eligible again on the failed socket")
	}
}

// TestLinkMetrics: each serving interface's link is up and serving, or not.
func TestLinkMetrics(t *testing.T) {
	t.Parallel()
	c := newCluster("h1", "h2")
	h1, h2 := c.startTwo(t, vipV4, vipV4)
	waitLink(t, h1, h2, "")
	check := func(up, serving float64) {
		t.Helper()
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(h1.d.serving.links)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				got[mf.GetName()+"/"+m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			}
		}
		want := map[string]float64{linkwatch.MetricLinkUp + "/test0": up, linkwatch.MetricLinkServing + "/test0": serving}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("link metrics (-want +got):\n%s", diff)
		}
	}
	check(1, 1)
	h1.kernel.set(linkwatch.Link{Index: 2, Name: "test0", Up: true, Oper: "down"})
	waitLink(t, h1, h2, "link test0: no carrier")
	check(0, 0)
}

// TestSpreadHeldIneligible: a VIP whose routed flows the spreader holds is
// gossiped as failing, with the reason in the status, and only that VIP;
// its health is kept for when the hold ends.
func TestSpreadHeldIneligible(t *testing.T) {
	t.Parallel()
	db := netip.MustParseAddr("198.18.0.201")
	s := &hostState{cfg: &config.Config{VIPs: []config.VIP{{Name: "web", Address: web}, {Name: "db", Address: db}}},
		healthy: map[netip.Addr]bool{web: true, db: true}}
	held := true
	s.spreadHeld = func(v netip.Addr) bool { return held && v == web }
	s.mu.Lock()
	got := maps.Clone(s.eligible())
	s.mu.Unlock()
	if got[web] || !got[db] || !s.healthy[web] {
		t.Errorf("held: eligible %v, healthy %v; want web failing, db and web's health kept", got, s.healthy)
	}
	if f := s.LinkFault(web); !strings.Contains(f, "routed flows") || s.LinkFault(db) != "" {
		t.Errorf("status: web %q, db %q", f, s.LinkFault(db))
	}
	held = false
	s.mu.Lock()
	got = maps.Clone(s.eligible())
	s.mu.Unlock()
	if !got[web] || s.LinkFault(web) != "" {
		t.Errorf("no longer held: eligible %v, status %q", got, s.LinkFault(web))
	}
}
