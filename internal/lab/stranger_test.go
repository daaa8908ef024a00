package lab

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/arpshare/arpshare/gossip"
)

// strangerDatagrams are what anyone on the segment can send without the
// key: memberlist's label header (a type byte, 244, a length byte and the
// label) with the texts memberlist logs when it refutes a suspicion or its
// own death as the label, and the cluster's own label with, unencrypted, a
// user message (type 8) saying that a peer counted the host dead.
var strangerDatagrams = [][]byte{
	strangerDatagram("Refuting a suspect message", "not gossip"),
	strangerDatagram("Refuting a dead message", "not gossip"),
	strangerDatagram("lab", "\x08arpshare: counted dead/1"),
}

func strangerDatagram(label, body string) []byte {
	b := append([]byte{244, byte(len(label))}, label...)
	return append(b, body...)
}

// TestStrangerLabelArmsNothing: a machine on the segment without the gossip
// key sends every host's gossip port datagrams whose label is the text
// memberlist logs when it refutes (memberlist logs the label before any key
// check), and unencrypted ones that say a peer counted the host dead. No host may arm a re-assertion, no client may change host, and
// each host logs only a bounded number of memberlist's lines, counting the
// rest.
func TestStrangerLabelArmsNothing(t *testing.T) {
	requirePrivileged(t)
	l := newLab(t, 3, 7, HostConfig{Metrics: true})
	startAll(t, l.Hosts)
	stranger, clients := l.Clients[0], l.Clients[1:]
	before := assignment(t, clients)

	const perKind = 100 // per host and kind of datagram
	sent := perKind * len(strangerDatagrams)
	start := time.Now()
	err := inNS(stranger.NS, func() error {
		for _, h := range l.Hosts {
			conn, err := net.Dial("udp", netip.AddrPortFrom(h.Addr, 7946).String())
			if err != nil {
				return err
			}
			defer conn.Close()
			for _, d := range strangerDatagrams {
				for range perKind {
					if _, err := conn.Write(d); err != nil {
						return fmt.Errorf("send to %s: %w", h.Name, err)
					}
					time.Sleep(time.Millisecond) // within the receiver's socket buffer
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Each host took the datagrams: it logged or suppressed a line for
	// each (a few may be lost on the way, as UDP may be, on a busy
	// machine). Then re-assertion would be armed (its settle delay is
	// 2 s): give it that, and more.
	for _, h := range l.Hosts {
		deadline := time.Now().Add(15 * time.Second)
		for {
			logged := refusedLines(t, h, start)
			page, err := h.Scrape()
			if err != nil {
				t.Fatal(err)
			}
			suppressed := max(0, metric(t, page, gossip.MetricLogSuppressed, map[string]string{"level": "error"}))
			if logged+int(suppressed) >= sent-sent/20 {
				t.Logf("%s: %d of memberlist's lines logged, %.0f suppressed, for %d datagrams", h.Name, logged, suppressed, sent)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d lines logged and %.0f suppressed for %d datagrams", h.Name, logged, suppressed, sent)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	time.Sleep(3 * time.Second)

	for _, h := range l.Hosts {
		lines, err := h.LogSince(start)
		if err != nil {
			t.Fatal(err)
		}
		armed := 0
		for _, line := range lines {
			if strings.Contains(line.Text, "this host refuted") {
				armed++
			}
		}
		if armed > 0 {
			t.Errorf("%s armed a re-assertion %d times for a stranger's %d datagrams", h.Name, armed, sent)
		}
		page, err := h.Scrape()
		if err != nil {
			t.Fatal(err)
		}
		if n := metric(t, page, gossip.MetricRefutations, nil); n != 0 {
			t.Errorf("%s: %s = %v, want 0", h.Name, gossip.MetricRefutations, n)
		}
		// The log is bounded: the error budget (a burst of 20, then 2 a
		// second) over the test, whatever a stranger sends.
		if n, most := refusedLines(t, h, start), 20+2*int(time.Since(start).Seconds()+1); n > most {
			t.Errorf("%s logged %d lines for a stranger's %d datagrams, want at most %d", h.Name, n, sent, most)
		}
	}
	if diff := cmp.Diff(before, assignment(t, clients)); diff != "" {
		t.Errorf("clients moved (-before +after):\n%s", diff)
	}
}

// refusedLines counts the lines in which a host's memberlist refused a
// datagram (its label, or its encryption) since t.
func refusedLines(t *testing.T, h *Host, since time.Time) int {
	t.Helper()
	lines, err := h.LogSince(since)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range lines {
		if strings.Contains(line.Text, "unacceptable label") || strings.Contains(line.Text, "Decrypt packet failed") {
			n++
		}
	}
	return n
}
