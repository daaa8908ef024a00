package gossip

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestTableBytesCounted checks that the client-table states of push-pulls
// are counted, each with its bytes, by direction and exchange.
func TestTableBytesCounted(t *testing.T) {
	t.Parallel()
	key := make([]byte, 32)
	lo := netip.MustParseAddr("127.0.0.1")
	binds := []netip.AddrPort{netip.AddrPortFrom(lo, freePort(t)), netip.AddrPortFrom(lo, freePort(t))}
	var nodes []*node
	for i, b := range binds {
		nodes = append(nodes, startNode(t, fmt.Sprintf("n%d", i+1), b, binds, key, "test"))
	}
	for _, n := range nodes {
		<-n.c.Ready()
		waitView(t, n, "two alive members", func(v *View) bool { return len(states(v)) == 2 })
	}
	n1 := nodes[0]
	reg := prometheus.NewRegistry()
	reg.MustRegister(n1.c.Collector())
	got := map[string]float64{}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			got[f.GetName()+"/"+labels["direction"]+"/"+labels["exchange"]] = m.GetCounter().GetValue()
		}
	}
	// n1's state is "table of n1" to a joining peer, the peer's "table of
	// n2": 11 bytes each.
	sent, sentBytes := got[MetricTableStates+"/sent/join"], got[MetricTableBytes+"/sent/join"]
	recv, recvBytes := got[MetricTableStates+"/received/join"], got[MetricTableBytes+"/received/join"]
	if sent+recv == 0 {
		t.Fatalf("no join state counted: %v", got)
	}
	if sentBytes != 11*sent || recvBytes != 11*recv {
		t.Errorf("join states: sent %v in %v bytes, received %v in %v bytes; want 11 bytes each", sent, sentBytes, recv, recvBytes)
	}
}
