package fastpath

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/arpshare/arpshare/internal/bpf/bpftest"
)

// TestWakes: once armed, the program's first report wakes the reader, and
// the next ones do not until it is armed again.
func TestWakes(t *testing.T) {
	bpftest.Privileged(t)
	p, err := Load(0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	own := [6]byte{0x02, 0, 0, 0, 0, 0xbb}
	vip := netip.MustParseAddr("198.18.0.200")
	clients := []netip.Addr{netip.MustParseAddr("198.18.0.101"), netip.MustParseAddr("198.18.0.102"), netip.MustParseAddr("198.18.0.103")}
	mac := func(i int) [6]byte { return [6]byte{0x02, 0, 0, 0, 0, byte(i + 1)} }
	var ds []Decision
	for i, c := range clients {
		ds = append(ds, Decision{VIP: vip, Client: c, MAC: mac(i), Answer: true})
	}
	if err := p.objs.Iface.Put(uint32(0), fastpathBPFIfaceState{Mac: own, Serving: 1}); err != nil {
		t.Fatal(err)
	}
	if err := p.Replace(ds); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wakes, err := p.Wakes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ask := func(i int) {
		t.Helper()
		in := arpFrame(broadcast, mac(i), 1, mac(i), clients[i], [6]byte{}, vip)
		if _, err := p.objs.ArpFastpath.Run(&ebpf.RunOptions{Data: in, DataOut: make([]byte, len(in))}); err != nil {
			t.Fatal(err)
		}
	}
	woken := func(within time.Duration) bool {
		select {
		case <-wakes:
			return true
		case <-time.After(within):
			return false
		}
	}

	ask(0) // not armed: reported, but nobody woken
	if woken(200 * time.Millisecond) {
		t.Error("woken before Arm")
	}
	if err := p.Arm(); err != nil {
		t.Fatal(err)
	}
	ask(1)
	if !woken(5 * time.Second) {
		t.Fatal("not woken by the first report after Arm")
	}
	ask(2)
	if woken(200 * time.Millisecond) {
		t.Error("woken again before Arm")
	}
	n := 0
	if err := p.DrainSeen(func(Seen) { n++ }); err != nil || n != 3 {
		t.Errorf("drained %d reports (%v), want 3", n, err)
	}
}
