package gossip

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/arpshare/arpshare/internal/clock/clocktest"
)

// The tests in this file drive the cluster's time-based decisions on a
// fake clock, by direct calls: no memberlist runs, nothing waits for real
// time, and a busy machine cannot change what they see.

// epoch is the fake clocks' start: long after the zero times (1970) that
// stand for "never" in the cluster's state.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// unitCluster is a cluster that is never run, on a fake clock, with itself
// as a live member and the given members joined.
func unitCluster(t *testing.T, log *slog.Logger, members ...*memberlist.Node) (*Cluster, *clocktest.Fake) {
	t.Helper()
	clk := clocktest.New(epoch)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := NewCluster(ClusterConfig{
		Name: "self", Bind: unitAddr(1),
		Peers:         []netip.AddrPort{unitAddr(1), unitAddr(2), unitAddr(3)},
		ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond,
		SuspicionMult: 2, RejoinInterval: time.Second,
		Logger: log, Clock: clk,
	})
	events{c}.NotifyJoin(unitNode(t, "self", 1, false))
	for _, m := range members {
		events{c}.NotifyJoin(m)
	}
	c.rebuild()
	return c, clk
}

func unitAddr(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(i)}), 7946)
}

// unitNode is a member as memberlist reports it, at unitAddr(i).
func unitNode(t *testing.T, name string, i int, draining bool) *memberlist.Node {
	t.Helper()
	meta, err := Meta{Version: MetaVersion, Algorithm: Algorithm, Weight: 1, Draining: draining}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	a := unitAddr(i)
	return &memberlist.Node{Name: name, Addr: a.Addr().AsSlice(), Port: a.Port(), Meta: meta}
}

// shown rebuilds the view, as the loop does, and returns how it shows name.
func shown(t *testing.T, c *Cluster, name string) Member {
	t.Helper()
	c.rebuild()
	m, ok := c.View().Member(name)
	if !ok {
		t.Fatalf("%s missing from the view %+v", name, c.View().Members)
	}
	return m
}

// TestUnreachableWindow: a live member that acks none of this host's probes
// for longer than the probe window is shown unreachable, and reachable
// again with its next ack; this host never is.
func TestUnreachableWindow(t *testing.T) {
	t.Parallel()
	x := unitNode(t, "x", 2, false)
	c, clk := unitCluster(t, nil, x)
	c.mu.Lock()
	window := c.probeWindow()
	c.mu.Unlock()
	if m := shown(t, c, "x"); m.Unreachable {
		t.Fatal("x, new, shown unreachable before its first round")
	}
	clk.Advance(window)
	if m := shown(t, c, "x"); m.Unreachable {
		t.Errorf("x shown unreachable at the end of the window (%s)", window)
	}
	clk.Advance(time.Nanosecond)
	if m := shown(t, c, "x"); !m.Unreachable {
		t.Errorf("x, unheard for longer than the window (%s), shown reachable", window)
	}
	if m := shown(t, c, "self"); m.Unreachable {
		t.Error("this host shown unreachable")
	}
	pings{c}.NotifyPingComplete(x, 0, nil)
	if m := shown(t, c, "x"); m.Unreachable {
		t.Error("x shown unreachable after it acked a probe")
	}
}

// TestRecheckWindow: the members that died are joined again while they
// died less than recheckFor ago, each at least once, a held one (its death
// in doubt) no more often than once every recheckHeld, and none after.
func TestRecheckWindow(t *testing.T) {
	t.Parallel()
	held, drained := unitNode(t, "held", 2, false), unitNode(t, "drained", 3, true)
	c, clk := unitCluster(t, nil, held, drained)
	events{c}.NotifyLeave(held)
	events{c}.NotifyLeave(drained) // draining: not held
	heldAt := unitAddr(2).String()
	start := clk.Now()
	step := recheckEvery * c.cfg.ProbeInterval // the loop's look
	last, joins := map[string]time.Time{}, map[string]int{}
	for ; clk.Now().Sub(start) < recheckFor; clk.Advance(step) {
		if !c.diedRecently() {
			t.Fatalf("%s after the deaths: not died recently", clk.Now().Sub(start))
		}
		for _, a := range c.recheckTargets(clk.Now()) {
			if a == heldAt && joins[a] > 0 && clk.Now().Sub(last[a]) < recheckHeld {
				t.Errorf("the held member joined %s after the last time, want at least %s", clk.Now().Sub(last[a]), recheckHeld)
			}
			last[a] = clk.Now()
			joins[a]++
		}
	}
	if joins[heldAt] == 0 || joins[unitAddr(3).String()] == 0 || len(joins) != 2 {
		t.Errorf("joins within recheckFor: %v, want both members", joins)
	}
	if got := c.recheckTargets(clk.Now()); len(got) != 0 || c.diedRecently() {
		t.Errorf("recheckFor after the deaths: rechecks %v (died recently %v), want none", got, c.diedRecently())
	}
}

// TestNameConflictWindow: a host whose name another host claims is rejected
// while it goes unprobed for longer than the probe window, and for at most
// three rejoin intervals after the conflict; a conflict between two other
// hosts is theirs.
func TestNameConflictWindow(t *testing.T) {
	t.Parallel()
	c, clk := unitCluster(t, nil)
	self, other := unitNode(t, "self", 1, false), unitNode(t, "self", 9, false)
	rejected := func() bool {
		c.rebuild()
		return c.View().Rejected != ""
	}
	conflicts{c}.NotifyConflict(unitNode(t, "x", 2, false), unitNode(t, "x", 3, false))
	if rejected() {
		t.Fatal("rejected for a conflict between two other hosts")
	}
	conflicts{c}.NotifyConflict(self, other)
	if !rejected() {
		t.Fatal("not rejected with its name taken and never probed")
	}
	pings{c}.AckPayload() // a peer probes this host: the name is its own
	if rejected() {
		t.Error("rejected while its peers probe it")
	}
	c.mu.Lock()
	window := c.probeWindow()
	c.mu.Unlock()
	clk.Advance(window)
	if rejected() {
		t.Errorf("rejected, probed a window (%s) ago", window)
	}
	clk.Advance(time.Nanosecond)
	if !rejected() {
		t.Errorf("not rejected, unprobed for longer than the window (%s)", window)
	}
	clk.Advance(3*c.cfg.RejoinInterval - window - 2*time.Nanosecond)
	if !rejected() {
		t.Error("not rejected just within three rejoin intervals of the conflict")
	}
	clk.Advance(time.Nanosecond)
	if rejected() {
		t.Error("still rejected three rejoin intervals after the conflict")
	}
}

// TestCountedDeathOwed: a member back from a death this host counted is
// owed a notice for recheckFor; one back from a death still in doubt, or
// that was draining, is owed none.
func TestCountedDeathOwed(t *testing.T) {
	t.Parallel()
	x, d := unitNode(t, "x", 2, false), unitNode(t, "d", 3, true)
	c, clk := unitCluster(t, nil, x, d)
	owed := func() []string {
		var names []string
		for _, o := range c.stillOwed(clk.Now()) {
			names = append(names, o.name)
		}
		return names
	}
	events{c}.NotifyLeave(x)
	events{c}.NotifyJoin(x) // refuted while in doubt
	events{c}.NotifyLeave(d)
	events{c}.NotifyJoin(d)
	if got := owed(); len(got) != 0 || c.owesNotice() {
		t.Fatalf("owed %v after deaths never counted, want none", got)
	}
	events{c}.NotifyLeave(x)
	c.endHold("x")
	if m := shown(t, c, "x"); m.State != StateDead {
		t.Fatalf("x shown %s after its death counted", m.State)
	}
	events{c}.NotifyJoin(x)
	clk.Advance(recheckFor)
	if got := owed(); !slices.Equal(got, []string{"x"}) {
		t.Errorf("owed %v within recheckFor, want [x]", got)
	}
	clk.Advance(time.Nanosecond)
	if got := owed(); len(got) != 0 || c.owesNotice() {
		t.Errorf("owed %v after recheckFor, want none (forgotten)", got)
	}
}

// TestMissingPeers: the rejoin contacts the configured peers that are not
// live members, never this host, and every peer while this host is
// rejected.
func TestMissingPeers(t *testing.T) {
	t.Parallel()
	c, _ := unitCluster(t, nil, unitNode(t, "two", 2, false))
	if got, want := c.missing(), []string{unitAddr(3).String()}; !slices.Equal(got, want) {
		t.Errorf("missing %v, want %v", got, want)
	}
	c.mu.Lock()
	v := *c.view
	v.Rejected = "refused"
	c.view = &v
	c.mu.Unlock()
	if got, want := c.missing(), []string{unitAddr(2).String(), unitAddr(3).String()}; !slices.Equal(got, want) {
		t.Errorf("rejected: missing %v, want %v", got, want)
	}
}

// TestCheckSelf: this host notes that it runs late when its timer fires
// half a probe timeout late (deaths it hears of then stay in doubt, see
// TestSlowHostHoldsDeaths), and says it is slow once per doubt; a health
// score counts only with two peers to send nacks.
func TestCheckSelf(t *testing.T) {
	t.Parallel()
	h := &countingHandler{count: map[slog.Level]int{}}
	c, clk := unitCluster(t, slog.New(h), unitNode(t, "two", 2, false))
	late := c.cfg.ProbeTimeout / 2
	warned := func() int {
		h.mu.Lock()
		defer h.mu.Unlock()
		n := 0
		for _, m := range h.msgs {
			if strings.HasPrefix(m, "this host is slow") {
				n++
			}
		}
		return n
	}
	lagAt := func() time.Time {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.lagAt
	}
	c.checkSelf(late-time.Nanosecond, 5) // a score, but one peer only
	if !lagAt().IsZero() || warned() != 0 {
		t.Fatalf("on time: ran late at %v, %d warnings", lagAt(), warned())
	}
	c.checkSelf(late, 0)
	if !lagAt().Equal(clk.Now()) || warned() != 1 {
		t.Fatalf("late: ran late at %v (want %v), %d warnings (want 1)", lagAt(), clk.Now(), warned())
	}
	clk.Advance(c.maxHold())
	c.checkSelf(late, 0) // still in doubt: said already
	if !lagAt().Equal(clk.Now()) || warned() != 1 {
		t.Errorf("late again: ran late at %v (want %v), %d warnings (want 1)", lagAt(), clk.Now(), warned())
	}
	clk.Advance(c.maxHold() + time.Nanosecond)
	was := lagAt()
	events{c}.NotifyJoin(unitNode(t, "three", 3, false))
	c.checkSelf(0, 1) // two peers: the score is this host's own
	if !lagAt().Equal(was) || warned() != 2 {
		t.Errorf("health score: ran late at %v (want %v, unchanged), %d warnings (want 2)", lagAt(), was, warned())
	}
}

// patience bounds how long a test waits for a condition that a working
// cluster reaches: memberlist's rounds, a goroutine coming to its next wait.
// It is no measure of speed; a test that runs out of it prints what it saw.
const patience = 30 * time.Second

// answer is what a scripted probe of a member in doubt finds.
type answer struct {
	pinged  bool
	reached reachResult
}

var (
	pinged    = answer{pinged: true, reached: reachOpen}
	portOnly  = answer{reached: reachOpen}
	refused   = answer{reached: reachClosed}
	noAnswer  = answer{reached: reachNone}
	verifyGap = max(100*time.Millisecond, recheckHeld) // verify's wait between checks, for unitCluster
)

// scriptedProber answers verify's probes one by one, as the test says,
// until the test ends (quit).
type scriptedProber struct {
	asked   chan string
	answers chan answer
	quit    chan struct{}
}

func (p scriptedProber) probe(name string, _ netip.AddrPort) (bool, reachResult) {
	select {
	case p.asked <- name:
	case <-p.quit:
		return false, reachNone
	}
	select {
	case a := <-p.answers:
		return a.pinged, a.reached
	case <-p.quit:
		return false, reachNone
	}
}

// verifyRun runs verify of one member on a unit cluster, probe by probe.
type verifyRun struct {
	t     *testing.T
	c     *Cluster
	clk   *clocktest.Fake
	p     scriptedProber
	name  string
	start time.Time
	done  chan struct{}
}

// startVerify reports name, a live member, dead (held in doubt, as its
// member may have clients) and runs verify on it as the loop would.
func startVerify(t *testing.T, c *Cluster, clk *clocktest.Fake, n *memberlist.Node) *verifyRun {
	t.Helper()
	r := &verifyRun{t: t, c: c, clk: clk, name: n.Name, start: clk.Now(), done: make(chan struct{}),
		p: scriptedProber{asked: make(chan string), answers: make(chan answer), quit: make(chan struct{})}}
	c.probes = r.p
	events{c}.NotifyLeave(n)
	if got := c.rebuild(); !slices.Equal(got, []string{n.Name}) {
		t.Fatalf("to verify after the report: %v, want [%s]", got, n.Name)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(r.done)
		c.verify(ctx, n.Name)
	}()
	t.Cleanup(func() {
		cancel()
		close(r.p.quit)
		<-r.done
	})
	return r
}

// What verify does next (see next).
const (
	probes = "probes"
	sleeps = "sleeps"
	ends   = "ends"
)

// next waits for verify's next step: a probe (which the test then answers
// with reply), a sleep before its next check, or its end.
func (r *verifyRun) next() string {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	slept := make(chan struct{})
	go func() {
		if r.clk.WaitSleepers(ctx, 1) == nil {
			close(slept)
		}
	}()
	select {
	case <-r.p.asked:
		return probes
	case <-slept:
		return sleeps
	case <-r.done:
		return ends
	case <-ctx.Done():
		r.t.Fatalf("verify of %s neither probed, slept nor ended", r.name)
		return ""
	}
}

// expect fails the test unless verify's next step is want.
func (r *verifyRun) expect(want string) {
	r.t.Helper()
	if got := r.next(); got != want {
		r.t.Fatalf("verify of %s %s %s after the report, want it %s", r.name, got, r.clk.Now().Sub(r.start), want)
	}
}

// reply answers the probe verify waits on.
func (r *verifyRun) reply(a answer) { r.p.answers <- a }

// probe expects a probe and answers it.
func (r *verifyRun) probe(a answer) {
	r.t.Helper()
	r.expect(probes)
	r.reply(a)
}

// TestDeathInDoubt: a member reported dead that answers this host's pings
// stays alive and reachable while it does, for at most maxSlowHold after
// its check began; then its death counts.
func TestDeathInDoubt(t *testing.T) {
	t.Parallel()
	x := unitNode(t, "x", 2, false)
	c, clk := unitCluster(t, nil, x)
	r := startVerify(t, c, clk, x)
	for clk.Now().Sub(r.start) < maxSlowHold {
		r.probe(pinged)
		r.expect(sleeps)
		// Beyond the probe window too: reachable by its answers.
		if m := shown(t, c, "x"); m.State != StateAlive || m.Unreachable {
			t.Fatalf("x, answering, shown %s (unreachable %v) %s after the report", m.State, m.Unreachable, clk.Now().Sub(r.start))
		}
		clk.Advance(verifyGap)
	}
	// maxSlowHold is up: its last check, then no more.
	r.probe(pinged)
	r.expect(sleeps)
	clk.Advance(verifyGap)
	r.expect(ends)
	if m := shown(t, c, "x"); m.State != StateDead {
		t.Errorf("x shown %s %s after the report, want dead (held at most %s)", m.State, clk.Now().Sub(r.start), maxSlowHold)
	}
}

// TestStarvedMemberHeld: a member reported dead that answers no ping while
// its kernel takes connections on its gossip port (a daemon too starved to
// answer) stays alive, unreachable once the probe window passes; once
// nothing listens there, its death counts at its next check.
func TestStarvedMemberHeld(t *testing.T) {
	t.Parallel()
	x := unitNode(t, "x", 2, false)
	c, clk := unitCluster(t, nil, x)
	r := startVerify(t, c, clk, x)
	c.mu.Lock()
	window := c.probeWindow()
	c.mu.Unlock()
	// Longer than the longest suspicion: the report alone would count.
	for clk.Now().Sub(r.start) <= c.maxHold()+verifyGap {
		r.probe(portOnly)
		r.expect(sleeps)
		m := shown(t, c, "x")
		if m.State != StateAlive {
			t.Fatalf("x, starved, shown %s %s after the report", m.State, clk.Now().Sub(r.start))
		}
		if unheard := clk.Now().Sub(r.start); m.Unreachable != (unheard > window) {
			t.Errorf("x, unheard for %s (window %s), shown unreachable %v", unheard, window, m.Unreachable)
		}
		clk.Advance(verifyGap)
	}
	r.probe(refused)
	r.expect(ends)
	if m := shown(t, c, "x"); m.State != StateDead {
		t.Errorf("x, its port closed, shown %s", m.State)
	}
}

// TestDeathInDoubtMisses: one check that goes unanswered is tried again at
// once and proves nothing; two in a row count the death.
func TestDeathInDoubtMisses(t *testing.T) {
	t.Parallel()
	x := unitNode(t, "x", 2, false)
	c, clk := unitCluster(t, nil, x)
	r := startVerify(t, c, clk, x)
	r.probe(noAnswer)
	r.probe(pinged) // asked again at once
	r.expect(sleeps)
	if m := shown(t, c, "x"); m.State != StateAlive {
		t.Fatalf("x shown %s after one miss", m.State)
	}
	clk.Advance(verifyGap)
	r.probe(noAnswer)
	r.probe(noAnswer)
	r.expect(ends)
	if m := shown(t, c, "x"); m.State != StateDead {
		t.Errorf("x, unanswering twice, shown %s", m.State)
	}
}

// TestSlowHostHoldsDeaths: while this host runs late (its own checks may be
// what is late), unanswered checks prove nothing and the death stays held;
// two probe intervals after it last ran late, two misses count it.
func TestSlowHostHoldsDeaths(t *testing.T) {
	t.Parallel()
	x := unitNode(t, "x", 2, false)
	c, clk := unitCluster(t, nil, x)
	c.checkSelf(c.cfg.ProbeTimeout, 0)
	r := startVerify(t, c, clk, x)
	for range 5 {
		r.probe(noAnswer)
	}
	// Past the hold the report began with; a round's lateness is judged
	// as it begins, before its probe.
	r.expect(probes)
	clk.Advance(2*c.cfg.ProbeInterval - time.Nanosecond)
	r.reply(noAnswer)
	r.expect(probes)
	if m := shown(t, c, "x"); m.State != StateAlive {
		t.Fatalf("x shown %s while this host runs late", m.State)
	}
	clk.Advance(time.Nanosecond) // no longer late as of the next round
	r.reply(noAnswer)
	r.probe(noAnswer)
	r.expect(ends)
	if m := shown(t, c, "x"); m.State != StateDead {
		t.Errorf("x shown %s after two misses, this host on time", m.State)
	}
}
