package gossip

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
)

// TestRefusal: a join's refusal is judged from how the stream went, by
// error value: a failed dial or a silent peer is down, a peer that hangs
// up refuses the label, one that answers refuses the key (or its lack).
func TestRefusal(t *testing.T) {
	t.Parallel()
	const peer = "198.18.0.12:7946"
	labelled := func(b ...byte) []byte { return append([]byte{labelByte, 3, 'l', 'a', 'b'}, b...) }
	for _, tc := range []struct {
		name string
		keys bool
		fate *streamFate
		want string // substring; "" means not a refusal
	}{
		{"never dialled", true, nil, ""},
		{"refused", true, &streamFate{dialErr: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}, ""},
		{"no route", true, &streamFate{dialErr: &net.OpError{Op: "dial", Err: syscall.EHOSTUNREACH}}, ""},
		{"silent", true, &streamFate{readErr: os.ErrDeadlineExceeded}, ""},
		{"hangs up", true, &streamFate{readErr: io.EOF}, `cluster label is not "lab"`},
		{"resets", true, &streamFate{readErr: &net.OpError{Op: "read", Err: syscall.ECONNRESET}}, `cluster label is not "lab"`},
		{"other key", true, &streamFate{head: labelled(encryptedByte, 0, 1)}, "gossip key does not match peer " + peer + ": copy /etc/arpshare/gossip.key from a cluster member"},
		{"peer encrypts", false, &streamFate{head: []byte{encryptedByte, 0}}, "encrypts gossip and this host does not"},
		{"peer does not encrypt", true, &streamFate{head: labelled(13, 0)}, "does not encrypt gossip"},
		{"something else", false, &streamFate{head: []byte{13, 0}}, "refuses this host: remote error"},
	} {
		cfg := ClusterConfig{Name: "a", Label: "lab", KeyFile: "/etc/arpshare/gossip.key"}
		if tc.keys {
			cfg.Keys = [][]byte{make([]byte, 32)}
		}
		c := NewCluster(cfg)
		c.streams = &watchedTransport{fates: map[string]*streamFate{}}
		if tc.fate != nil {
			c.streams.fates[peer] = tc.fate
		}
		got := c.refusal(peer, errors.New("remote error"))
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: refusal %q, want %q", tc.name, got, tc.want)
		}
		if got := c.refusal(peer, nil); got != "" {
			t.Errorf("%s: refusal of no error %q", tc.name, got)
		}
	}
}

// TestJoinStates runs real memberlist instances on loopback: a host whose
// peers are down is alone and serves; hosts whose peers refuse them (wrong
// key, wrong label) are rejected and serve nobody, until they are taken.
func TestJoinStates(t *testing.T) {
	t.Parallel()
	lo := netip.MustParseAddr("127.0.0.1")
	key, otherKey := make([]byte, 32), make([]byte, 32)
	otherKey[0] = 1
	a, b := netip.AddrPortFrom(lo, freePort(t)), netip.AddrPortFrom(lo, freePort(t))
	down := netip.AddrPortFrom(lo, heldPort(t)) // nothing answers there

	lonely := startNode(t, "lonely", netip.AddrPortFrom(lo, freePort(t)), []netip.AddrPort{down}, key, "test")
	na := startNode(t, "a", a, []netip.AddrPort{b}, key, "test")
	wrongKey := startNode(t, "wrong-key", netip.AddrPortFrom(lo, freePort(t)), []netip.AddrPort{a}, otherKey, "test")
	wrongLabel := startNode(t, "wrong-label", netip.AddrPortFrom(lo, freePort(t)), []netip.AddrPort{a}, key, "other")

	waitView(t, wrongKey, "rejected for its key", func(v *View) bool {
		return strings.Contains(v.Rejected, "gossip key does not match peer "+a.String())
	})
	waitView(t, wrongLabel, "rejected for its label", func(v *View) bool {
		return strings.Contains(v.Rejected, `cluster label is not "other"`)
	})
	vip := netip.MustParseAddr("198.18.0.200")
	for _, n := range []*node{wrongKey, wrongLabel} {
		v := n.c.View()
		if v.Serving() || v.JoinState() != JoinRejected {
			t.Errorf("%s: serving %v, state %q; want a silent rejected host", n.c.cfg.Name, v.Serving(), v.JoinState())
		}
	}
	// A host whose peers are down serves alone once its first view holds
	// itself (it may not yet when the rejections above come in).
	for _, n := range []*node{lonely, na} {
		waitView(t, n, "alone and answering", func(v *View) bool {
			return v.Serving() && v.JoinState() == JoinAlone && len(v.Eligible(vip)) == 1
		})
	}

	// The peer a was waiting for comes up: both are members.
	nb := startNode(t, "b", b, []netip.AddrPort{a}, key, "test")
	for _, n := range []*node{na, nb} {
		waitView(t, n, "a member", func(v *View) bool { return v.JoinState() == JoinMember && v.Serving() })
	}
}

// TestNameTaken checks that a host started with the name of a live member
// is rejected, and the member is not.
func TestNameTaken(t *testing.T) {
	t.Parallel()
	lo := netip.MustParseAddr("127.0.0.1")
	key := make([]byte, 32)
	a, b := netip.AddrPortFrom(lo, freePort(t)), netip.AddrPortFrom(lo, freePort(t))
	na := startNode(t, "a", a, []netip.AddrPort{b}, key, "test")
	nb := startNode(t, "b", b, []netip.AddrPort{a}, key, "test")
	for _, n := range []*node{na, nb} {
		waitView(t, n, "a member", func(v *View) bool { return v.JoinState() == JoinMember })
	}
	dup := netip.AddrPortFrom(lo, freePort(t))
	nd := startNode(t, "a", dup, []netip.AddrPort{a, b}, key, "test")
	waitView(t, nd, "rejected for its name", func(v *View) bool {
		return strings.Contains(v.Rejected, `node name "a" is taken by the live member at `+a.String())
	})
	if v := nd.c.View(); v.Serving() {
		t.Errorf("the duplicate serves: %+v", v)
	}
	// memberlist tells the real a of the conflict too; a stays a member
	// while its peers probe it (TestNameConflictWindow), and b keeps
	// knowing a at its own address.
	waitFor(t, "the real a told of the conflict", func() bool {
		na.c.mu.Lock()
		defer na.c.mu.Unlock()
		return na.c.conflictWith == dup.String()
	}, func() string { return "no conflict" })
	if m, _ := nb.c.View().Member("a"); m.Addr != a {
		t.Errorf("b sees a as %+v, want it at %s", m, a)
	}
}

// TestReach: the check of a member's gossip port over the network: a port
// whose kernel completes the handshake (a daemon that holds it, however
// starved) is open; one bound with nothing listening (the daemon gone)
// refuses.
func TestReach(t *testing.T) {
	t.Parallel()
	lo := netip.MustParseAddr("127.0.0.1")
	c := NewCluster(ClusterConfig{Name: "n1", Bind: netip.AddrPortFrom(lo, 0), Label: "test"})
	ln, err := net.Listen("tcp", netip.AddrPortFrom(lo, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close() // never accepts: the kernel alone answers
	// However long the dial takes: the verdict is what is checked.
	if got := c.reach(netip.MustParseAddrPort(ln.Addr().String()), patience); got != reachOpen {
		t.Errorf("a port listened on: reach %v, want open", got)
	}
	if got := c.reach(netip.AddrPortFrom(lo, heldPort(t)), patience); got != reachClosed {
		t.Errorf("a port nothing listens on: reach %v, want closed", got)
	}
}
