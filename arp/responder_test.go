package arp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"

	"github.com/arpshare/arpshare/arp/arptest"
	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/gossip"
)

var (
	vip       = netip.MustParseAddr("198.18.0.200")
	myMAC     = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	peerMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	clientMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	// view: this host "me" and its peer share vip and vip6 in hash mode.
	view = gossip.NewView("me", []gossip.Member{
		{Name: "me", State: gossip.StateAlive, Meta: gossip.Meta{Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: 1, VIPs: []netip.Addr{vip, vip6}, MACs: []string{myMAC.String()}}},
		{Name: "peer", State: gossip.StateAlive, Meta: gossip.Meta{Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: 1, VIPs: []netip.Addr{vip, vip6}, MACs: []string{peerMAC.String()}}},
	}, 0)
	// Clients of vip (and vip6) that this host answers, and that it does not.
	mine, theirs   = split(vip, netip.MustParseAddr("198.18.0.101"))
	mine6, theirs6 = split(vip6, netip.MustParseAddr("fd00::101"))
	hashPolicy     = policy.Of(policy.Hash)
	hashVIPs       = []SharedVIP{{vip, hashPolicy}}
	hashVIPs6      = []SharedVIP{{vip6, hashPolicy}}
)

// split returns the first address from start on that this host owns in
// view, and the first that its peer owns.
func split(vip, start netip.Addr) (mine, theirs netip.Addr) {
	for a := start; !mine.IsValid() || !theirs.IsValid(); a = a.Next() {
		switch hashPolicy.Owner(view, vip, a) {
		case "me":
			if !mine.IsValid() {
				mine = a
			}
		default:
			if !theirs.IsValid() {
				theirs = a
			}
		}
	}
	return mine, theirs
}

func request(t testing.TB, op arp.Operation, sha net.HardwareAddr, spa netip.Addr, tpa netip.Addr) []byte {
	t.Helper()
	b, err := frameFor(op, sha, spa, net.HardwareAddr{0, 0, 0, 0, 0, 0}, tpa, ethernet.Broadcast)
	if err != nil {
		t.Fatal(err)
	}
	// frameFor sets the Ethernet source to sha, as a real client's frame has.
	return b
}

// withSHA returns frame with its ARP sender hardware address set to mac,
// its Ethernet source left as it is.
func withSHA(frame []byte, mac []byte) []byte {
	copy(frame[offSHA:offSHA+6], mac)
	return frame
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestHandle(t *testing.T) {
	t.Parallel()
	short := request(t, arp.OperationRequest, clientMAC, mine, vip)[:20]
	ipv6ARP := request(t, arp.OperationRequest, clientMAC, mine, vip)
	ipv6ARP[14+5] = 16 // protocol address length 16
	notARP := request(t, arp.OperationRequest, clientMAC, mine, vip)
	notARP[12], notARP[13] = 0x08, 0x00

	dadOutcome := NotOwner
	if hashPolicy.Answers(view, vip, netip.IPv4Unspecified()) {
		dadOutcome = Answered
	}
	tests := []struct {
		name      string
		frame     []byte
		want      Outcome
		wantReply bool
		wantLearn bool
	}{
		{"owned client", request(t, arp.OperationRequest, clientMAC, mine, vip), Answered, true, true},
		{"other host's client", request(t, arp.OperationRequest, clientMAC, theirs, vip), NotOwner, false, true},
		{"duplicate address probe", request(t, arp.OperationRequest, clientMAC, netip.IPv4Unspecified(), vip), dadOutcome, dadOutcome == Answered, false},
		{"reply to a re-pointing request", request(t, arp.OperationReply, clientMAC, mine, vip), Reply, false, true},
		{"reply to another address", request(t, arp.OperationReply, clientMAC, mine, netip.MustParseAddr("198.18.0.1")), Reply, false, false},
		{"foreign target", request(t, arp.OperationRequest, clientMAC, mine, netip.MustParseAddr("198.18.0.1")), Foreign, false, false},
		{"stranger claims the VIP", request(t, arp.OperationRequest, clientMAC, vip, vip), Conflict, false, false},
		{"peer announces the VIP", request(t, arp.OperationRequest, peerMAC, vip, vip), PeerAnnounce, false, false},
		{"broadcast sender MAC", withSHA(request(t, arp.OperationRequest, clientMAC, mine, vip), broadcast[:]), BadSenderMAC, false, false},
		{"multicast sender MAC", withSHA(request(t, arp.OperationRequest, clientMAC, mine, vip), []byte{1, 0, 0x5e, 0, 0, 1}), BadSenderMAC, false, false},
		{"zero sender MAC", withSHA(request(t, arp.OperationRequest, clientMAC, mine, vip), zeroMAC), BadSenderMAC, false, false},
		{"sender MAC not the Ethernet source", withSHA(request(t, arp.OperationRequest, clientMAC, mine, vip), peerMAC), MACMismatch, false, false},
		{"broadcast sender MAC in a reply", withSHA(request(t, arp.OperationReply, clientMAC, mine, vip), broadcast[:]), BadSenderMAC, false, false},
		{"broadcast sender MAC claims the VIP", withSHA(request(t, arp.OperationRequest, clientMAC, vip, vip), broadcast[:]), BadSenderMAC, false, false},
		{"multicast sender address", request(t, arp.OperationRequest, clientMAC, netip.MustParseAddr("224.0.0.5"), vip), BadSenderIP, false, false},
		{"broadcast sender address", request(t, arp.OperationRequest, clientMAC, netip.MustParseAddr("255.255.255.255"), vip), BadSenderIP, false, false},
		{"loopback sender address", request(t, arp.OperationRequest, clientMAC, netip.MustParseAddr("127.0.0.1"), vip), BadSenderIP, false, false},
		{"truncated", short, Malformed, false, false},
		{"ipv6-sized addresses", ipv6ARP, Malformed, false, false},
		{"not ARP", notARP, Malformed, false, false},
		{"empty", nil, Malformed, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			table := NewClientTable(10, time.Hour)
			r := NewResponder(ResponderConfig{Interface: "eth0", VIPs: hashVIPs, Table: table, View: view, Logger: quietLogger()})
			v := r.decideARP(r.snap.Load(), tt.frame, [6]byte(myMAC), time.Unix(100, 0))
			if v.out != tt.want {
				t.Errorf("outcome = %q, want %q", v.out, tt.want)
			}
			if v.send != tt.wantReply {
				t.Fatalf("send = %v, want %v", v.send, tt.wantReply)
			}
			if v.send {
				reply := make([]byte, arpFrameLen)
				arpReply(reply, tt.frame, [6]byte(myMAC))
				dst := net.HardwareAddr(reply[:6])
				var f ethernet.Frame
				var p arp.Packet
				if err := f.UnmarshalBinary(reply); err != nil {
					t.Fatal(err)
				}
				if err := p.UnmarshalBinary(f.Payload); err != nil {
					t.Fatal(err)
				}
				if p.Operation != arp.OperationReply || p.SenderIP != vip || p.SenderHardwareAddr.String() != myMAC.String() ||
					p.TargetHardwareAddr.String() != clientMAC.String() || dst.String() != clientMAC.String() {
					t.Errorf("reply %+v to %s, want from %s/%s to %s", p, dst, vip, myMAC, clientMAC)
				}
			}
			if learned := table.Len() == 1; learned != tt.wantLearn {
				t.Errorf("learned = %v, want %v", learned, tt.wantLearn)
			}
		})
	}
}

func TestResponderRunWaitsAndReopens(t *testing.T) {
	t.Parallel()
	first, second := arptest.NewConn(), arptest.NewConn()
	var (
		mu     sync.Mutex
		opens  int
		opened []string
	)
	listen := func(name string) (Conn, net.HardwareAddr, error) {
		mu.Lock()
		defer mu.Unlock()
		opens++
		switch opens {
		case 1:
			return nil, nil, errors.New("no such interface")
		case 2:
			return first, myMAC, nil
		default:
			return second, myMAC, nil
		}
	}
	table := NewClientTable(10, time.Hour)
	r := NewResponder(ResponderConfig{
		Interface: "eth0", VIPs: hashVIPs, Table: table, View: view,
		Logger: quietLogger(), Listen: listen, Retry: time.Millisecond,
		OnOpen: func(name string, mac net.HardwareAddr) error {
			mu.Lock()
			defer mu.Unlock()
			opened = append(opened, name)
			return nil
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()

	<-r.Ready()
	first.In <- request(t, arp.OperationRequest, clientMAC, mine, vip)
	first.In <- []byte("garbage")
	close(first.In) // the link goes away; the responder must reopen
	second.In <- request(t, arp.OperationRequest, clientMAC, theirs, vip)
	for table.Len() < 2 {
		time.Sleep(time.Millisecond)
	}
	if err := r.Repoint(vip, Client{IP: theirs, MAC: clientMAC}); err != nil {
		t.Fatalf("Repoint: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(first.Written()) != 1 || len(second.Written()) != 1 {
		t.Errorf("written: first %d (the reply), second %d (the repoint), want 1 and 1", len(first.Written()), len(second.Written()))
	}
	want := Stats{
		Frames:    map[Key]uint64{{vip, Answered}: 1, {netip.Addr{}, Malformed}: 1, {vip, NotOwner}: 1},
		Replies:   map[netip.Addr]uint64{vip: 1},
		Repoints:  map[netip.Addr]uint64{vip: 1},
		Announces: map[netip.Addr]uint64{},
		Kernel:    map[Key]uint64{},
	}
	if diff := cmp.Diff(want, r.Stats(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"eth0", "eth0"}, opened); diff != "" {
		t.Errorf("OnOpen calls (-want +got):\n%s", diff)
	}
	if err := r.Repoint(vip, Client{IP: theirs, MAC: clientMAC}); !errors.Is(err, ErrNotOpen) {
		t.Errorf("Repoint after stop = %v, want ErrNotOpen", err)
	}
}

// Answering a client does not protect it, nor does its asking again soon
// after: each host answers its share of a flood, and a flood asks twice as
// cheaply as once. Its answer to this host's re-pointing request does.
func TestAnswerOnceDoesNotProtect(t *testing.T) {
	t.Parallel()
	table := NewClientTable(10, time.Hour)
	r := NewResponder(ResponderConfig{Interface: "eth0", VIPs: hashVIPs, Table: table, View: view, Logger: quietLogger()})
	frame := request(t, arp.OperationRequest, clientMAC, mine, vip)
	if v := r.decideARP(r.snap.Load(), frame, [6]byte(myMAC), time.Unix(100, 0)); v.out != Answered {
		t.Fatalf("outcome %s, want answered", v.out)
	}
	r.decideARP(r.snap.Load(), frame, [6]byte(myMAC), time.Unix(130, 0))
	if table.Protected(vip, mine) {
		t.Error("a client answered twice is protected")
	}
	reply := request(t, arp.OperationReply, clientMAC, mine, vip)
	r.decideARP(r.snap.Load(), reply, [6]byte(myMAC), time.Unix(131, 0))
	if table.Protected(vip, mine) {
		t.Error("a reply nobody asked for protects")
	}
	table.Asked(vip, mine, time.Unix(140, 0))
	r.decideARP(r.snap.Load(), reply, [6]byte(myMAC), time.Unix(141, 0))
	if !table.Protected(vip, mine) {
		t.Error("a client that answered this host's request is not protected")
	}
}
