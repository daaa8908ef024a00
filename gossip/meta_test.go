package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestMetaRejected: each kind of metadata out of range is refused with its
// reason, the member shown untrusted, never eligible, and not counted toward
// quorum.
func TestMetaRejected(t *testing.T) {
	t.Parallel()
	good := `"v":1,"a":1`
	for _, tc := range []struct {
		name, json, reason string
	}{
		{"not json", `{"v":1,`, RejectDecode},
		{"too large", `{` + good + `,"w":1,"x":"` + strings.Repeat("a", MaxMetaSize) + `"}`, RejectDecode},
		{"version", `{"v":2,"a":1,"w":1}`, RejectVersion},
		{"version range above", `{"v":3,"vm":2,"a":1,"w":1}`, RejectVersion},
		{"version zero", `{"v":0,"a":1,"w":1}`, RejectVersion},
		{"software too long", `{"v":1,"a":1,"w":1,"s":"` + strings.Repeat("1", MaxSoftwareLen+1) + `"}`, RejectDecode},
		{"algorithm", `{"v":1,"a":9,"w":1}`, RejectAlgorithm},
		{"weight zero", `{` + good + `,"w":0}`, RejectWeight},
		{"weight negative", `{` + good + `,"w":-5}`, RejectWeight},
		{"weight huge", `{` + good + `,"w":4000000000}`, RejectWeight},
		{"weight above range", fmt.Sprintf(`{%s,"w":%d}`, good, MaxWeight+1), RejectWeight},
		{"VIP twice", `{` + good + `,"w":1,"h":["198.18.0.200"],"u":["198.18.0.200"]}`, RejectVIPs},
		{"VIP unspecified", `{` + good + `,"w":1,"h":["0.0.0.0"]}`, RejectVIPs},
		{"VIP empty", `{` + good + `,"w":1,"h":[""]}`, RejectVIPs},
		{"VIP multicast", `{` + good + `,"w":1,"h":["ff02::1"]}`, RejectVIPs},
		{"VIP zone", `{` + good + `,"w":1,"h":["fe80::1%eth0"]}`, RejectVIPs},
		{"MAC broadcast", `{` + good + `,"w":1,"m":["ff:ff:ff:ff:ff:ff"]}`, RejectMACs},
		{"MAC multicast", `{` + good + `,"w":1,"m":["01:00:5e:00:00:01"]}`, RejectMACs},
		{"MAC zero", `{` + good + `,"w":1,"m":["00:00:00:00:00:00"]}`, RejectMACs},
		{"MAC EUI-64", `{` + good + `,"w":1,"m":["02:00:00:00:00:00:00:01"]}`, RejectMACs},
		{"MAC garbage", `{` + good + `,"w":1,"m":["web"]}`, RejectMACs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := DecodeMeta([]byte(tc.json))
			var bad *MetaError
			if !errors.As(err, &bad) || bad.Reason != tc.reason {
				t.Fatalf("DecodeMeta: %v, want a %q rejection", err, tc.reason)
			}
			if m.Weight < 0 || m.Weight > MaxWeight {
				t.Errorf("weight %d returned unbounded", m.Weight)
			}
			// As memberlist reports it: shown, untrusted, never eligible,
			// not counted toward quorum.
			c := NewCluster(ClusterConfig{Name: "a", Expect: 2, Logger: slog.New(slog.DiscardHandler)})
			for _, n := range []*memberlist.Node{
				{Name: "a", Meta: []byte(`{"v":1,"a":1,"w":1,"h":["198.18.0.200"]}`)},
				{Name: "b", Meta: []byte(tc.json)},
			} {
				events{c}.NotifyJoin(n)
			}
			c.rebuild()
			v := c.View()
			b, ok := v.Member("b")
			if !ok || b.Live() || b.Reason != tc.reason || b.Err == "" {
				t.Errorf("member b: %+v, want untrusted for %s", b, tc.reason)
			}
			if e := names(v.Eligible(testVIP)); len(e) != 1 || e[0] != "a" {
				t.Errorf("eligible: %v, want only a", e)
			}
			if v.Alive() != 1 || v.Quorum() {
				t.Errorf("alive %d, quorum %v: the rejected member counts", v.Alive(), v.Quorum())
			}
		})
	}
	// Counts beyond the bounds do not fit in memberlist's 512 bytes today;
	// they are refused whatever the size limit.
	many := Meta{Version: MetaVersion, Algorithm: Algorithm, Weight: 1}
	for i := range MaxMetaVIPs + 1 {
		many.VIPs = append(many.VIPs, netip.AddrFrom4([4]byte{10, 0, byte(i / 256), byte(i)}))
	}
	if err := many.check(); err == nil || err.Reason != RejectVIPs {
		t.Errorf("%d VIPs: %v", len(many.VIPs), err)
	}
	many.VIPs = nil
	for range MaxMetaMACs + 1 {
		many.MACs = append(many.MACs, "02:00:00:00:00:01")
	}
	if err := many.check(); err == nil || err.Reason != RejectMACs {
		t.Errorf("%d MACs: %v", len(many.MACs), err)
	}
	// The bounds themselves are in range.
	ok := fmt.Sprintf(`{%s,"w":%d,"h":["198.18.0.200"],"u":["fd00::1"],"m":["02:00:00:00:00:01","52:54:00:12:34:56"]}`, good, MaxWeight)
	if _, err := DecodeMeta([]byte(ok)); err != nil {
		t.Errorf("DecodeMeta(%s): %v", ok, err)
	}
}

// TestQuorumNotManufactured: with expect set and the configuration naming
// that many hosts, members at other addresses (made up by a key holder)
// never make a quorum; a host whose configuration names fewer counts every
// trusted member, as before.
func TestQuorumNotManufactured(t *testing.T) {
	t.Parallel()
	at := func(i int) netip.AddrPort {
		return netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("198.18.0.%d", i)), 7946)
	}
	member := func(name string, i int) Member {
		return Member{Name: name, Addr: at(i), State: StateAlive, Meta: meta([]netip.Addr{testVIP}, nil)}
	}
	hosts := []netip.AddrPort{at(1), at(2), at(3)}
	// a, cut off from b and c, and two made-up members.
	ms := []Member{member("a", 1), member("x", 50), member("y", 51)}
	v := NewView("a", ms, 3)
	v.Hosts = hosts
	if v.Quorum() {
		t.Errorf("made-up members gave a quorum: alive %d", v.Alive())
	}
	// Made up at a configured address, twice: counts once.
	v = NewView("a", append(ms, member("z", 2), member("w", 2)), 3)
	v.Hosts = hosts
	if n := v.Alive(); n != 2 {
		t.Errorf("alive %d, want 2 (a, and one member at b's address)", n)
	}
	// A fourth host that the configuration does not name yet is a member,
	// eligible, and not counted.
	v = NewView("a", []Member{member("a", 1), member("b", 2), member("d", 4)}, 3)
	v.Hosts = hosts
	if v.Alive() != 2 || !v.Quorum() || len(v.Eligible(testVIP)) != 3 {
		t.Errorf("alive %d quorum %v eligible %v", v.Alive(), v.Quorum(), names(v.Eligible(testVIP)))
	}
	// Configuration naming fewer hosts than expect (seeds only): every
	// trusted member counts.
	v = NewView("a", ms, 3)
	v.Hosts = hosts[:1]
	if !v.Quorum() {
		t.Errorf("seeds-only configuration: alive %d, no quorum", v.Alive())
	}
}

// TestLogLimiter: each level has its own budget; lines over it are dropped
// and counted, and the next line let through says how many.
func TestLogLimiter(t *testing.T) {
	t.Parallel()
	l := newLogLimiter()
	now := time.Now()
	b := logBudgets[slog.LevelError]
	let := 0
	for range 1000 {
		if ok, _ := l.allow(slog.LevelError, now); ok {
			let++
		}
	}
	if let != b.burst {
		t.Errorf("%d of 1000 error lines at once let through, want %d", let, b.burst)
	}
	if ok, _ := l.allow(slog.LevelWarn, now); !ok {
		t.Error("errors used up the warnings' budget")
	}
	if got := l.Suppressed()["error"]; got != uint64(1000-b.burst) {
		t.Errorf("suppressed %d, want %d", got, 1000-b.burst)
	}
	ok, before := l.allow(slog.LevelError, now.Add(time.Duration(float64(time.Second)/b.rate)))
	if !ok || before != 1000-b.burst {
		t.Errorf("after a refill: allowed %v, %d suppressed before, want true, %d", ok, before, 1000-b.burst)
	}
}

// TestOwnMetaOutOfRange: a host whose own metadata its peers would reject
// says so as it publishes it.
func TestOwnMetaOutOfRange(t *testing.T) {
	t.Parallel()
	h := &countingHandler{count: map[slog.Level]int{}}
	c := NewCluster(ClusterConfig{Name: "a", Logger: slog.New(h), Meta: func() Meta {
		return Meta{Version: MetaVersion, Algorithm: Algorithm, Weight: 1, MACs: []string{"ff:ff:ff:ff:ff:ff"}}
	}})
	if b := (delegate{c}).NodeMeta(MaxMetaSize); len(b) == 0 {
		t.Fatal("no metadata published")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !slices.ContainsFunc(h.msgs, func(m string) bool { return strings.Contains(m, "peers reject it") }) {
		t.Errorf("nothing said of metadata out of range: %q", h.msgs)
	}
}
