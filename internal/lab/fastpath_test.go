package lab

import (
	"encoding/json"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"
)

// frameCounts is what a host's status says of the VIP's requests: answered
// and not_owner, in user space and in the kernel fast path.
type frameCounts struct{ userAnswered, userNotOwner, kernelAnswered, kernelNotOwner uint64 }

func countsOf(t *testing.T, h *Host) frameCounts {
	t.Helper()
	s, err := h.Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range s.VIPs {
		if v.Address == VIP {
			return frameCounts{
				userAnswered: v.Frames["answered"] - v.KernelFrames["answered"], userNotOwner: v.Frames["not_owner"] - v.KernelFrames["not_owner"],
				kernelAnswered: v.KernelFrames["answered"], kernelNotOwner: v.KernelFrames["not_owner"],
			}
		}
	}
	t.Fatalf("%s: no VIP %s in status", h.Name, VIP)
	return frameCounts{}
}

// askAll has every client forget the VIP and ask for it (one broadcast
// request from its own address and MAC), and checks that exactly its
// owner's MAC answers.
func askAll(t *testing.T, l *Lab, owners map[string]string, macs map[string]string) {
	t.Helper()
	for _, c := range l.Clients {
		if err := c.ForgetVIP(); err != nil {
			t.Fatal(err)
		}
		got, err := c.ARPAnswers(VIP, 300*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{macs[owners[c.Name]]}; !slices.Equal(want, got) {
			t.Errorf("client %s (of %s): answered by %v, want %v", c.Name, owners[c.Name], got, want)
		}
	}
}

// TestFastPath: with node.fast_path = "on", the requests of clients the
// daemons know are answered (or left to the owner) in the kernel: the
// daemons' user-space counts do not move while every client still gets its
// owner's MAC, and still learn that the clients asked. After a power loss
// the survivors' kernels answer the dead host's clients; a host left
// without a quorum answers nobody, in the kernel or not.
func TestFastPath(t *testing.T) {
	requirePrivileged(t)
	l := newLab(t, 3, 6, HostConfig{FastPath: "on", Expect: 3, Metrics: true})
	startAll(t, l.Hosts)
	names := []string{"h1", "h2", "h3"}
	macs := map[string]string{}
	for _, h := range l.Hosts {
		mac, err := h.MAC()
		if err != nil {
			t.Fatal(err)
		}
		macs[h.Name] = mac
	}
	// The first requests are the daemons' to decide: they learn the
	// clients and hand their decisions to the kernel.
	base := assignment(t, l.Clients)
	for _, c := range l.Clients {
		if want := owner(names, c); base[c.Name] != want {
			t.Fatalf("client %s served by %s, owner is %s", c.Name, base[c.Name], want)
		}
	}
	// The kernel answers once the daemons have written every decision
	// after the last view change.
	deadline := time.Now().Add(10 * time.Second)
	for {
		first := l.Hosts[0]
		before := countsOf(t, first)
		askAll(t, l, base, macs)
		if after := countsOf(t, first); after.userAnswered == before.userAnswered && after.userNotOwner == before.userNotOwner {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: user space still decides on known clients after 10 s", first.Name)
		}
		time.Sleep(500 * time.Millisecond)
	}

	perHost := count(base)
	before := map[string]frameCounts{}
	for _, h := range l.Hosts {
		before[h.Name] = countsOf(t, h)
	}
	asked := time.Now()
	const rounds = 3
	for range rounds {
		askAll(t, l, base, macs)
	}
	for _, h := range l.Hosts {
		b, a := before[h.Name], countsOf(t, h)
		if a.userAnswered != b.userAnswered || a.userNotOwner != b.userNotOwner {
			t.Errorf("%s: user space decided on known clients: %+v, then %+v", h.Name, b, a)
		}
		mine := uint64(rounds * perHost[h.Name])
		theirs := uint64(rounds*len(l.Clients)) - mine
		if a.kernelAnswered-b.kernelAnswered != mine || a.kernelNotOwner-b.kernelNotOwner != theirs {
			t.Errorf("%s: the kernel answered %d and left %d to others, want %d and %d",
				h.Name, a.kernelAnswered-b.kernelAnswered, a.kernelNotOwner-b.kernelNotOwner, mine, theirs)
		}
	}

	// The metrics say so too.
	m, err := l.Hosts[0].Scrape()
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^arpshare_responder_kernel_frames_total\{interface="eth0",outcome="answered",protocol="arp",vip="web"\} (\d+)$`)
	if got := re.FindStringSubmatch(m); got == nil || got[1] != strconv.FormatUint(countsOf(t, l.Hosts[0]).kernelAnswered, 10) {
		t.Errorf("h1's metrics: kernel frames answered %v, want the status's %d", got, countsOf(t, l.Hosts[0]).kernelAnswered)
	}
	if !regexp.MustCompile(`(?m)^arpshare_fast_path_attached\{interface="eth0"\} 1$`).MatchString(m) {
		t.Errorf("h1's metrics do not say the fast path is attached on eth0")
	}

	// The clients answered in the kernel are seen: their last-seen time
	// moves on every host (reported every second).
	time.Sleep(2500 * time.Millisecond)
	for _, h := range l.Hosts {
		out, err := h.Run("clients", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var cs []struct {
			IP       netip.Addr `json:"ip"`
			LastSeen time.Time  `json:"last_seen"`
		}
		if err := json.Unmarshal([]byte(out), &cs); err != nil {
			t.Fatalf("%s: clients --json: %v", h.Name, err)
		}
		seen := map[netip.Addr]time.Time{}
		for _, c := range cs {
			seen[c.IP] = c.LastSeen
		}
		for _, c := range l.Clients {
			// Unix milliseconds in the table.
			if s, ok := seen[c.Addr]; !ok || s.Before(asked.Truncate(time.Millisecond)) {
				t.Errorf("%s: client %s last seen %v, want after %v", h.Name, c.Name, s, asked)
			}
		}
	}
	if t.Failed() {
		return
	}

	// Power loss: the survivors take the dead host's clients over, and
	// once their decisions are rewritten, their kernels answer them.
	after := map[string]string{}
	for _, c := range l.Clients {
		after[c.Name] = owner([]string{"h1", "h3"}, c)
	}
	powerLoss(t, l, l.Hosts[1], VIP, base, after)
	if t.Failed() {
		return
	}
	survivors := []*Host{l.Hosts[0], l.Hosts[2]}
	before = map[string]frameCounts{}
	for _, h := range survivors {
		before[h.Name] = countsOf(t, h)
	}
	askAll(t, l, after, macs)
	moved := 0
	for _, c := range l.Clients {
		if base[c.Name] == "h2" {
			moved++
		}
	}
	var kernelAnswered uint64
	for _, h := range survivors {
		b, a := before[h.Name], countsOf(t, h)
		if a.userAnswered != b.userAnswered || a.userNotOwner != b.userNotOwner {
			t.Errorf("%s: user space decided on known clients after the failover: %+v, then %+v", h.Name, b, a)
		}
		kernelAnswered += a.kernelAnswered - b.kernelAnswered
	}
	if kernelAnswered != uint64(len(l.Clients)) {
		t.Errorf("after the failover the survivors' kernels answered %d requests, want %d (%d moved clients)", kernelAnswered, len(l.Clients), moved)
	}

	if t.Failed() {
		return
	}

	// h3 goes too: h1 alone is a minority of the 3 expected hosts, and
	// must stop answering, in the kernel as well.
	if err := l.Hosts[2].PowerOff(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		s, err := l.Hosts[0].Status()
		if err != nil {
			t.Fatal(err)
		}
		if !s.Quorum {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("h1 kept a quorum alone for 10 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, c := range l.Clients {
		if err := c.ForgetVIP(); err != nil {
			t.Fatal(err)
		}
		if got, err := c.ARPAnswers(VIP, 300*time.Millisecond); err != nil || len(got) > 0 {
			t.Errorf("client %s: answered by %v (%v) with no quorum anywhere", c.Name, got, err)
		}
	}
}
