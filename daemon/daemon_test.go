package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	mdarp "github.com/mdlayher/arp"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/api"
	"github.com/arpshare/arpshare/internal/config"
	"github.com/arpshare/arpshare/internal/metrics"
)

var (
	mac1 = net.HardwareAddr{2, 0, 0, 0, 0, 1}
	mac2 = net.HardwareAddr{2, 0, 0, 0, 0, 2}

	web   = netip.MustParseAddr("198.18.0.200")
	db    = netip.MustParseAddr("198.18.0.201")
	web6  = netip.MustParseAddr("fd00::200")
	vipV4 = vipTOML("web", web, "test0", "")
	vipV6 = vipTOML("web6", web6, "test0", "")
)

// vipTOML is a [[vip]] table; check, if set, is its check's TOML.
func vipTOML(name string, addr netip.Addr, iface, check string) string {
	s := fmt.Sprintf("[[vip]]\nname = %q\naddress = %q\ninterface = %q\n", name, addr, iface)
	if check != "" {
		s += "[vip.check]\n" + check + "\n"
	}
	return s
}

// tcpCheck is a check of a listener the test opens and closes, probed
// every second (the first probe at once), that flips at the first result.
// Its timeout is long: one that a loaded machine overruns flips a healthy
// VIP to unhealthy, and a probe in flight then can flip it back after the
// listener closed.
func tcpCheck(t *testing.T) (check string, l net.Listener) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return fmt.Sprintf("tcp = %q\ninterval = \"1s\"\ntimeout = \"1s\"\nrise = 1\nfall = 1", l.Addr()), l
}

func metaOf(v *gossip.View, name string) (gossip.Meta, bool) {
	for _, m := range v.Members {
		if m.Name == name && m.Live() {
			return m.Meta, true
		}
	}
	return gossip.Meta{}, false
}

// TestApplyStart: at start the VIPs go on lo, each serving interface gets
// its sysctls and a responder per family, the MAC goes into the metadata,
// a VIP without a check is healthy and one with a check is not until it
// passes; READY waits for gossip, the API and the reloader.
func TestApplyStart(t *testing.T) {
	t.Parallel()
	c := newCluster("h1")
	check, _ := tcpCheck(t)
	n := c.start(t, "h1", vipV4+vipTOML("web6", web6, "test0", check), mac1)

	if diff := cmp.Diff([]netip.Addr{web, web6}, n.host.onLo(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("VIPs on lo (-want +got):\n%s", diff)
	}
	eventually(t, "both responders open", func() bool { return n.links.arpConn("test0") != nil && n.links.ndpConn("test0") != nil })
	eventually(t, "the NDP responder joins the VIP's solicited-node group", func() bool {
		return n.links.ndpConn("test0").Member(netip.MustParseAddr("ff02::1:ff00:200"))
	})
	// Set once the conn is open (OnOpen), which may come after the test
	// sees the conn.
	eventually(t, "the ARP sysctls of test0 set", func() bool { return n.host.quieted("test0") })
	eventually(t, "the MAC and both VIPs healthy in the metadata", func() bool {
		m, ok := metaOf(n.d.cluster.View(), "h1")
		return ok && slices.Equal(m.MACs, []string{mac1.String()}) && len(m.VIPs) == 2 && len(m.Unhealthy) == 0
	})
	if !n.notes.has("READY=1\nSTATUS=") {
		t.Errorf("systemd notes: %q", n.notes.s)
	}
	if err := n.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := n.host.onLo(); len(got) != 0 {
		t.Errorf("VIPs left on lo after stop: %v", got)
	}
	if !n.links.arpConn("test0").Closed() {
		t.Error("the ARP conn is still open after stop")
	}
	if !n.notes.has("STOPPING=1") {
		t.Errorf("no STOPPING=1 sent: %q", n.notes.s)
	}
}

// TestApplyStartFails: a VIP that cannot be plumbed at start is fatal, and
// the VIPs already added are taken off again.
func TestApplyStartFails(t *testing.T) {
	t.Parallel()
	c := newCluster("h1")
	n := c.prepare(t, "h1", vipV4+vipTOML("db", db, "test0", ""), mac1)
	n.host.failAdd[db] = errors.New("operation not permitted")
	err := n.d.Run(context.Background(), n.path)
	if err == nil || !strings.Contains(err.Error(), `vip "db"`) || !strings.Contains(err.Error(), "operation not permitted") {
		t.Fatalf("Run: %v, want the db VIP's error", err)
	}
	if got := n.host.onLo(); len(got) != 0 {
		t.Errorf("VIPs left on lo: %v", got)
	}
}

// TestTaskFailureStops: a task of the daemon's life that fails stops the
// daemon, and Run returns its error naming it.
func TestTaskFailureStops(t *testing.T) {
	t.Parallel()
	c := newCluster("h1")
	n := c.prepare(t, "h1", vipV4, mac1)
	// The API's socket directory cannot be made: a file is in the way.
	file := filepath.Join(n.dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	n.d.api = api.NewServer(filepath.Join(file, "api.sock"), n.d, quietLog(), false)
	done := make(chan error, 1)
	go func() { done <- n.d.Run(context.Background(), n.path) }()
	select {
	case err := <-done:
		if err == nil || !strings.HasPrefix(err.Error(), "api on "+n.d.api.Socket()) {
			t.Fatalf("Run: %v, want the API's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the API failed")
	}
	if n.notes.has("READY=1") {
		t.Error("READY=1 sent though the API never listened")
	}
	if got := n.host.onLo(); len(got) != 0 {
		t.Errorf("VIPs left on lo: %v", got)
	}
}

// scrape returns the value of one series of the daemon's metrics, as
// Prometheus reads it.
func scrape(t *testing.T, d *Daemon, series string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(d.NewRegistry(), promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// TestReload adds, removes and changes VIPs live: the added VIP goes on lo
// with its responder, the removed one comes off and its clients are
// forgotten, an interface no longer served is closed, a changed check is
// replaced, an unchanged VIP keeps its responder; a VIP that cannot be
// plumbed is left out and the reload counted as failed; a config with an
// error is refused.
func TestReload(t *testing.T) {
	t.Parallel()
	c := newCluster("h1")
	check, _ := tcpCheck(t)
	n := c.start(t, "h1", vipV4+vipTOML("db", db, "test1", check), mac1)
	eventually(t, "both interfaces open", func() bool { return n.links.arpConn("test0") != nil && n.links.arpConn("test1") != nil })
	test0 := n.links.arpConn("test0")
	client := netip.MustParseAddr("198.18.1.1")
	n.d.table.Learn(db, client, net.HardwareAddr{2, 1, 0, 0, 0, 1}, time.Now())

	// db goes, web6 comes on test0 and web gets a check.
	check2, _ := tcpCheck(t)
	n.write(c.config("h1", n.dir, vipTOML("web", web, "test0", check2)+vipV6))
	if err := n.d.Reload(n.path); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if diff := cmp.Diff([]netip.Addr{web, web6}, n.host.onLo(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("VIPs on lo (-want +got):\n%s", diff)
	}
	if _, ok := n.d.table.Get(db, client); ok {
		t.Error("a client of the removed VIP is still known")
	}
	eventually(t, "test1 closed", func() bool { return n.links.arpConn("test1").Closed() })
	if _, ok := n.d.state.mac("test1"); ok || slices.Contains(n.d.state.waitingFor(), "test1 (vip db)") {
		t.Error("test1, no longer served, is still in the host's state")
	}
	if test0.Closed() || n.links.arpConn("test0") != test0 {
		t.Error("the responder of test0, which still serves web, was reopened")
	}
	eventually(t, "an NDP responder on test0", func() bool { return n.links.ndpConn("test0") != nil })
	if _, err := n.d.responders.forVIP(db); err == nil {
		t.Error("db still has a responder")
	}
	n.d.serving.checks.mu.Lock()
	webCheck, dbCheck := n.d.serving.checks.byAddr[web], n.d.serving.checks.byAddr[db]
	n.d.serving.checks.mu.Unlock()
	if webCheck == nil || dbCheck != nil {
		t.Errorf("checks after reload: web %v db %v, want web's only", webCheck, dbCheck)
	}
	eventually(t, "web healthy by its new check", func() bool { return n.d.state.Health()[web] })
	if got := scrape(t, n.d, metrics.MetricConfigReloads+`{result="applied"}`); got != "1" {
		t.Errorf("reloads applied: %s, want 1", got)
	}

	// db comes back but cannot be plumbed: the rest is applied, the
	// reload counted as failed.
	n.host.mu.Lock()
	n.host.failAdd[db] = errors.New("file exists")
	n.host.mu.Unlock()
	n.write(c.config("h1", n.dir, vipTOML("web", web, "test0", check2)+vipTOML("db", db, "test1", "")))
	err := n.d.Reload(n.path)
	if err == nil || !strings.Contains(err.Error(), `vip "db"`) || errors.Is(err, errRefused) {
		t.Fatalf("reload with db failing: %v", err)
	}
	if slices.ContainsFunc(n.d.config().VIPs, func(v config.VIP) bool { return v.Name == "db" }) {
		t.Error("db is in the config in force, though it is not on lo")
	}
	if m := n.d.state.meta(); slices.Contains(m.VIPs, db) || slices.Contains(m.Unhealthy, db) {
		t.Errorf("db in the metadata: %+v", m)
	}
	if got := scrape(t, n.d, metrics.MetricConfigReloads+`{result="failed"}`); got != "1" {
		t.Errorf("reloads failed: %s, want 1", got)
	}
	if got := scrape(t, n.d, metrics.MetricConfigLastLoad); got != "0" {
		t.Errorf("last reload success: %s, want 0", got)
	}

	// A config with an error changes nothing.
	n.write("[node]\nname = 3\n")
	if err := n.d.Reload(n.path); !errors.Is(err, errRefused) {
		t.Fatalf("reload of a broken config: %v", err)
	}
	if got := scrape(t, n.d, metrics.MetricConfigReloads+`{result="refused"}`); got != "1" {
		t.Errorf("reloads refused: %s, want 1", got)
	}
	if len(n.d.config().VIPs) != 1 {
		t.Errorf("VIPs in force after a refused reload: %v", n.d.config().VIPs)
	}
	// The reloader tells systemd.
	n.d.newReloader(n.path).reload()
	if !n.notes.has("RELOADING=1") || !n.notes.has("READY=1\nSTATUS=last reload refused (") {
		t.Errorf("systemd notes: %q", n.notes.s)
	}
}

// TestHealthFlip: a failing check takes the VIP out of this host's
// metadata, and its peer's view shows it; a passing one brings it back.
func TestHealthFlip(t *testing.T) {
	t.Parallel()
	c := newCluster("h1", "h2")
	check, l := tcpCheck(t)
	h1, h2 := c.startTwo(t, vipTOML("web", web, "test0", check), vipV4)
	healthyAt := func(vip netip.Addr) func(*gossip.View) bool {
		return func(v *gossip.View) bool {
			m, ok := metaOf(v, "h1")
			return ok && slices.Contains(m.VIPs, vip) && !slices.Contains(m.Unhealthy, vip)
		}
	}
	v := eventuallyView(t, h2, "h2 sees h1 healthy", healthyAt(web))
	if got := v.Eligible(web); len(got) != 2 {
		t.Errorf("eligible for web: %v, want both", got)
	}

	l.Close() // the service goes down
	v = eventuallyView(t, h2, "h2 sees h1 unhealthy", func(v *gossip.View) bool {
		m, ok := metaOf(v, "h1")
		return ok && slices.Contains(m.Unhealthy, web)
	})
	if got := v.Eligible(web); len(got) != 1 || got[0].Name != "h2" {
		t.Errorf("eligible for web after h1's check fails: %v, want h2", got)
	}
	if h1.d.state.Health()[web] {
		t.Error("h1 thinks web healthy")
	}
	if !strings.Contains(h1.log.String(), "health check fails") {
		t.Error("the failure is not logged")
	}
	s := h1.d.Status()
	if s.Serving || !slices.Contains(s.NotServing, "vip web: health check fails") {
		t.Errorf("status of h1: serving %v, %q", s.Serving, s.NotServing)
	}
}

// TestViewChangeRepoints: when a host leaves, the survivor re-points the
// clients it takes over: a request addressed to each client, from the VIP,
// goes out on its interface.
func TestViewChangeRepoints(t *testing.T) {
	t.Parallel()
	c := newCluster("h1", "h2")
	h1, h2 := c.startTwo(t, vipV4, vipV4)
	eventually(t, "both see each other", func() bool {
		return len(h1.d.cluster.View().Eligible(web)) == 2 && len(h2.d.cluster.View().Eligible(web)) == 2
	})
	// Clients ask for the VIP: both hosts hear them and learn them.
	var clients []netip.Addr
	for i := range 8 {
		ip := netip.AddrFrom4([4]byte{198, 18, 1, byte(10 + i)})
		clients = append(clients, ip)
		mac := net.HardwareAddr{2, 1, 0, 0, 0, byte(10 + i)}
		for _, n := range []*node{h1, h2} {
			eventually(t, "conn open", func() bool { return n.links.arpConn("test0") != nil })
			n.links.arpConn("test0").In <- arpRequest(t, mac, ip, web)
		}
	}
	eventually(t, "h1 knows every client", func() bool { return h1.d.table.Len() == len(clients) })
	v := h1.d.cluster.View()
	var theirs []netip.Addr
	for _, ip := range clients {
		if policy.Of(policy.Hash).Owner(v, web, ip) == "h2" {
			theirs = append(theirs, ip)
		}
	}
	if len(theirs) == 0 {
		t.Fatal("h2 owns none of the clients: pick others")
	}
	conn := h1.links.arpConn("test0")
	repointed := func(ip netip.Addr) bool {
		return slices.ContainsFunc(sent(t, conn), func(s sentARP) bool {
			return s.p.Operation == mdarp.OperationRequest && s.p.TargetIP == ip && s.p.SenderIP == web &&
				s.p.SenderHardwareAddr.String() == mac1.String() && s.eth.String() != "ff:ff:ff:ff:ff:ff"
		})
	}
	for _, ip := range theirs {
		if repointed(ip) {
			t.Fatalf("client %s of h2 re-pointed to h1 while h2 is up", ip)
		}
	}

	if err := h2.stop(); err != nil {
		t.Fatalf("h2: %v", err)
	}
	for _, ip := range theirs {
		eventually(t, "h1 re-points "+ip.String(), func() bool { return repointed(ip) })
	}
	if s := h1.d.Status(); s.VIPs[0].Owners["h1"] != len(clients) {
		t.Errorf("h1 owns %d clients, want all %d: %+v", s.VIPs[0].Owners["h1"], len(clients), s.VIPs[0])
	}
}

// TestDrainResume: draining writes the state file, sets the draining flag
// in the metadata (the peer sees it) and shows in the status; a restart
// keeps it; resuming undoes it all.
func TestDrainResume(t *testing.T) {
	t.Parallel()
	c := newCluster("h1", "h2")
	h1, h2 := c.startTwo(t, vipV4, vipV4)
	draining := func(want bool) func(*gossip.View) bool {
		return func(v *gossip.View) bool {
			m, ok := metaOf(v, "h1")
			return ok && m.Draining == want
		}
	}
	eventuallyView(t, h2, "h2 sees h1 serving", draining(false))

	s, err := api.Drain(context.Background(), h1.d.api.Socket(), true, false)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Draining || s.Serving || !slices.Contains(s.NotServing, "draining (arpshare resume undoes it)") {
		t.Errorf("status after drain: draining %v serving %v %q", s.Draining, s.Serving, s.NotServing)
	}
	file := filepath.Join(h1.dir, "state", "drained")
	if _, err := os.Stat(file); err != nil {
		t.Errorf("state file: %v", err)
	}
	v := eventuallyView(t, h2, "h2 sees h1 draining", draining(true))
	if got := v.Eligible(web); len(got) != 1 || got[0].Name != "h2" {
		t.Errorf("eligible while h1 drains: %v", got)
	}

	// A restart keeps it drained.
	again := newDaemon(h1.d.config(), h1.d.log, "test", h1.d.seams)
	if !again.state.Draining() || !again.state.meta().Draining {
		t.Error("a daemon started after a drain does not drain")
	}

	s, err = api.Drain(context.Background(), h1.d.api.Socket(), false, false)
	if err != nil {
		t.Fatal(err)
	}
	if s.Draining || !s.Serving {
		t.Errorf("status after resume: draining %v serving %v %q", s.Draining, s.Serving, s.NotServing)
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file after resume: %v", err)
	}
	eventuallyView(t, h2, "h2 sees h1 serving again", draining(false))
	// Resuming twice is fine.
	if err := h1.d.SetDrained(context.Background(), false, false); err != nil {
		t.Error(err)
	}
}

// TestStatus: the status, clients and owner answers, through the API's
// socket, from a host that has answered one client.
func TestStatus(t *testing.T) {
	t.Parallel()
	c := newCluster("h1")
	n := c.prepare(t, "h1", vipV4+vipTOML("db", db, "test9", ""), mac1)
	n.links.down["test9"] = true // db's interface does not exist
	n.run()
	n.waitReady()
	eventually(t, "test0 open", func() bool { return n.links.arpConn("test0") != nil })
	client := netip.MustParseAddr("198.18.1.1")
	n.links.arpConn("test0").In <- arpRequest(t, net.HardwareAddr{2, 1, 0, 0, 0, 1}, client, web)
	eventually(t, "the answer", func() bool { return len(sent(t, n.links.arpConn("test0"))) > 0 })

	ctx := context.Background()
	s, err := api.GetStatus(ctx, n.d.api.Socket())
	if err != nil {
		t.Fatal(err)
	}
	if s.Node != "h1" || s.Version != "test" || !s.Quorum || s.Join != gossip.JoinAlone || len(s.Members) != 1 || s.Members[0].Name != "h1" {
		t.Errorf("status: %+v", s)
	}
	if len(s.VIPs) != 2 {
		t.Fatalf("VIPs: %+v", s.VIPs)
	}
	w := s.VIPs[0]
	if w.Name != "web" || !w.Answering || !w.Healthy || w.Clients != 1 || w.Owners["h1"] != 1 || w.Frames["answered"] != 1 || !slices.Equal(w.Eligible, []string{"h1"}) {
		t.Errorf("web: %+v", w)
	}
	if d := s.VIPs[1]; d.Answering || s.Serving || !slices.Contains(s.NotServing, "vip db: link test9: missing") {
		t.Errorf("db answering %v; serving %v %q", d.Answering, s.Serving, s.NotServing)
	}
	if !strings.Contains(n.d.statusLine(), "waiting for interface test9 (vip db)") {
		t.Errorf("status line: %s", n.d.statusLine())
	}

	cs, err := api.GetClients(ctx, n.d.api.Socket(), "web")
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].IP != client || cs[0].Owner != "h1" || cs[0].MAC != "02:01:00:00:00:01" {
		t.Errorf("clients: %+v", cs)
	}
	// An unknown VIP is refused with the list of those that exist.
	known := fmt.Sprintf(`no VIP "nope" here; VIPs: web (198.18.0.200), db (%s)`, db)
	if _, err := api.GetClients(ctx, n.d.api.Socket(), "nope"); err == nil || !strings.Contains(err.Error(), known) {
		t.Errorf("clients of an unknown VIP: %v, want %q", err, known)
	}
	if _, err := api.GetOwner(ctx, n.d.api.Socket(), "nope", client.String()); err == nil || !strings.Contains(err.Error(), known) {
		t.Errorf("owner for an unknown VIP: %v, want %q", err, known)
	}
	o, err := api.GetOwner(ctx, n.d.api.Socket(), "198.18.0.200", client.String())
	if err != nil {
		t.Fatal(err)
	}
	if o.VIP != "web" || o.Owner != "h1" || !o.Known || o.MAC != "02:01:00:00:00:01" || !o.Quorum {
		t.Errorf("owner: %+v", o)
	}
	if _, err := api.GetOwner(ctx, n.d.api.Socket(), "web", "not-an-ip"); err == nil {
		t.Error("owner of a client that is no IP: no error")
	}
}

// TestWatchdog pings systemd only while both main loops turn, or have not
// started yet.
func TestWatchdog(t *testing.T) {
	t.Parallel()
	c := newCluster("h1", "h2")
	n := c.start(t, "h1", vipV4, mac1)
	starting := c.prepare(t, "h2", vipV4, mac2) // made, not run
	starting.d.newWatchdog().check(time.Now(), time.Second)
	if !starting.notes.has("WATCHDOG=1") || strings.Contains(starting.log.String(), "stuck") {
		t.Errorf("a daemon whose loops have not started is called stuck:\n%s", starting.log.String())
	}
	w := n.d.newWatchdog()
	w.check(time.Now().Add(time.Hour), time.Second) // both loops an hour behind
	if n.notes.has("WATCHDOG=1") {
		t.Error("pinged with stuck loops")
	}
	if !strings.Contains(n.log.String(), "a main loop is stuck") {
		t.Error("stuck loops not logged")
	}
	eventually(t, "both loops turn", func() bool {
		w.check(time.Now(), time.Minute)
		return n.notes.has("WATCHDOG=1")
	})
}

// TestStatusDuringReload: status read while reloads add and remove a VIP
// on an interface of its own sees each config whole, with its responders:
// never a VIP without one.
func TestStatusDuringReload(t *testing.T) {
	t.Parallel()
	c := newCluster("h1")
	n := c.start(t, "h1", vipV4, mac1)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, v := range n.d.Status().VIPs {
				if v.Name == "db" && v.Frames == nil {
					t.Error("db without its responder's counts")
				}
			}
		}
	}()
	for i := range 20 {
		vips := vipV4
		if i%2 == 0 {
			vips += vipTOML("db", db, "test1", "")
		}
		n.write(c.config("h1", n.dir, vips))
		if err := n.d.Reload(n.path); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
	}
	close(stop)
	<-done
}
