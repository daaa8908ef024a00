package daemon

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/api"
)

// TestPeerStatusRejected: a live member whose gossiped metadata is rejected
// shows as rejected with its reason; a dead one stays dead; the rejection is
// logged once per cause, not on every view.
func TestPeerStatusRejected(t *testing.T) {
	t.Parallel()
	meta, err := gossip.DecodeMeta([]byte(`{"v":1,"a":1,"w":100000,"h":["198.18.0.200"]}`))
	if err == nil {
		t.Fatal("a weight of 100000 decoded")
	}
	bad := gossip.Member{Name: "h2", Addr: netip.MustParseAddrPort("198.18.0.12:7946"), State: gossip.StateAlive, Meta: meta, Err: err.Error(), Reason: gossip.RejectWeight}
	good := gossip.Member{Name: "h1", State: gossip.StateAlive, Meta: gossip.Meta{Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: 1}}
	gone := bad
	gone.Name, gone.State = "h3", gossip.StateDead
	got := api.PeerStatuses([]gossip.Member{good, bad, gone})
	if got[0].State != "alive" || got[1].State != api.MemberRejected || got[2].State != "dead" {
		t.Errorf("states %q %q %q, want alive rejected dead", got[0].State, got[1].State, got[2].State)
	}
	if !strings.Contains(got[1].Error, "weight 100000") {
		t.Errorf("error %q does not say why", got[1].Error)
	}
}
