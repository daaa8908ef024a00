package gossip_test

import (
	"net/netip"
	"testing"

	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
)

// FuzzDecodeMeta: whatever a peer gossips, decoding it never panics, what it
// accepts is in range, the weight it returns (trusted or not) is bounded,
// and the ownership function over a view holding it stays bounded: at most
// MaxWeight hashes per candidate.
func FuzzDecodeMeta(f *testing.F) {
	vip := netip.MustParseAddr("198.18.0.200")
	good, _ := gossip.Meta{Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: 1, VIPs: []netip.Addr{vip}, MACs: []string{"02:00:00:00:00:01"}}.Encode()
	f.Add(good)
	f.Add([]byte(`{"v":1,"a":1,"h":["::1"]}`))
	f.Add([]byte(`{"v":1,"a":1,"w":9223372036854775807,"h":["198.18.0.200"]}`))
	f.Add([]byte(`{"v":1,"a":1,"w":1,"h":["198.18.0.200"],"m":["ff:ff:ff:ff:ff:ff"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := gossip.DecodeMeta(b)
		if m.Weight < 0 || m.Weight > gossip.MaxWeight {
			t.Fatalf("weight %d out of bounds (error %v)", m.Weight, err)
		}
		if err == nil && (m.Version != gossip.MetaVersion || m.Algorithm != gossip.Algorithm || m.Weight < 1 ||
			len(m.VIPs)+len(m.Unhealthy) > gossip.MaxMetaVIPs || len(m.MACs) > gossip.MaxMetaMACs) {
			t.Fatalf("accepted %+v", m)
		}
		member := gossip.Member{Name: "peer", State: gossip.StateAlive, Meta: m}
		if err != nil {
			member.Err = err.Error()
		}
		self := gossip.Member{Name: "self", State: gossip.StateAlive, Meta: gossip.Meta{Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: 1, VIPs: []netip.Addr{vip}}}
		v := gossip.NewView("self", []gossip.Member{self, member}, 3)
		for _, a := range append([]netip.Addr{vip}, m.VIPs...) {
			for _, c := range v.Eligible(a) {
				if c.Weight < 1 || c.Weight > gossip.MaxWeight {
					t.Fatalf("candidate %+v for %s", c, a)
				}
			}
			if o := policy.Rendezvous(v.Eligible(a), a, netip.MustParseAddr("198.18.1.1")); err != nil && o == "peer" {
				t.Fatalf("rejected metadata %q owns a client", b)
			}
		}
		// Even handed on unchecked, the weight cannot stall a decision.
		policy.Rendezvous([]gossip.Candidate{{Name: "peer", Weight: m.Weight}}, vip, vip)
	})
}
