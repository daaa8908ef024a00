package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/config"
)

// fakeBackend answers as a daemon with one VIP, web, would.
type fakeBackend struct {
	drained bool
	refuse  bool
}

func (b *fakeBackend) Status() Status {
	s := Status{Node: "h1", Quorum: true, Draining: b.drained, Join: "member",
		VIPs: []VIPStatus{{Name: "web", Interface: "eth0", Answering: true, Healthy: true}}}
	s.Explain()
	return s
}

func (b *fakeBackend) Clients(vip string) ([]ClientStatus, error) {
	if vip != "" && vip != "web" {
		return nil, fmt.Errorf("no VIP %q here", vip)
	}
	return []ClientStatus{{VIP: "web", IP: netip.MustParseAddr("198.18.1.1"), MAC: "02:00:00:00:00:01", Owner: "h1"}}, nil
}

func (b *fakeBackend) Owner(vip, client string) (OwnerStatus, error) {
	if vip != "web" {
		return OwnerStatus{}, fmt.Errorf("no VIP %q here", vip)
	}
	return OwnerStatus{VIP: vip, Owner: "h1", Eligible: []string{"h1"}, Quorum: true}, nil
}

func (b *fakeBackend) SetDrained(_ context.Context, drained, force bool) error {
	switch {
	case b.refuse && drained && !force:
		return &RefusedError{VIPs: []config.VIP{{Name: "web", Address: netip.MustParseAddr("198.18.0.200")}}}
	case b.refuse && !drained:
		return errors.New("disk full")
	}
	b.drained = drained
	return nil
}

// TestClientAndServer: the client's calls reach the server's handlers over
// the socket, and errors come back with the server's words.
func TestClientAndServer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := &fakeBackend{}
	srv := NewServer(filepath.Join(t.TempDir(), "run", "api.sock"), b, slog.New(slog.DiscardHandler), false)
	srv.operators = func(uid int) bool { return uid == os.Geteuid() }
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	<-srv.Ready()
	sock := srv.Socket()
	if s, err := GetStatus(ctx, sock); err != nil || s.Node != "h1" || !s.Serving {
		t.Errorf("status: %+v, %v", s, err)
	}
	if cs, err := GetClients(ctx, sock, "web"); err != nil || len(cs) != 1 || cs[0].Owner != "h1" {
		t.Errorf("clients: %+v, %v", cs, err)
	}
	if _, err := GetClients(ctx, sock, "nope"); err == nil || !strings.Contains(err.Error(), `no VIP "nope" here`) {
		t.Errorf("clients of nope: %v", err)
	}
	if o, err := GetOwner(ctx, sock, "web", "198.18.1.1"); err != nil || o.Owner != "h1" {
		t.Errorf("owner: %+v, %v", o, err)
	}
	if _, err := GetOwner(ctx, sock, "nope", "198.18.1.1"); err == nil {
		t.Error("owner of nope: nil error")
	}
	if s, err := Drain(ctx, sock, true, false); err != nil || !s.Draining || s.Serving {
		t.Errorf("drain: %+v, %v", s, err)
	}
	if s, err := Drain(ctx, sock, false, false); err != nil || s.Draining {
		t.Errorf("resume: %+v, %v", s, err)
	}
	b.refuse = true
	if _, err := Drain(ctx, sock, true, false); err == nil || !strings.Contains(err.Error(), "last eligible host of vip web (198.18.0.200)") {
		t.Errorf("refused drain: %v", err)
	}
	if _, err := Drain(ctx, sock, false, false); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("failed resume: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if _, err := GetStatus(context.Background(), sock); err == nil {
		t.Error("status after the server stopped: nil error")
	}
}

// TestExplain: each reason not to serve is said once, and a host with none
// serves.
func TestExplain(t *testing.T) {
	t.Parallel()
	s := Status{Quorum: false, Expect: 3, Join: "rejected", JoinCause: "wrong key", Draining: true, VIPs: []VIPStatus{
		{Name: "web", Interface: "eth0", Link: "link eth0: no carrier", Healthy: true},
		{Name: "db", Interface: "eth1"},
	}}
	s.Explain()
	want := []string{"no quorum", "rejected by its peers: wrong key", "draining", "vip web: link eth0: no carrier", "vip db: interface eth1 missing or down", "vip db: health check fails"}
	if s.Serving || len(s.NotServing) != len(want) {
		t.Fatalf("serving %v, reasons %q", s.Serving, s.NotServing)
	}
	for i, w := range want {
		if !strings.HasPrefix(s.NotServing[i], w) {
			t.Errorf("reason %d: %q, want %q", i, s.NotServing[i], w)
		}
	}
}

// TestPeerStatuses: a live member whose metadata is rejected shows as
// rejected with its error; a dead one stays dead; the rest are copied.
func TestPeerStatuses(t *testing.T) {
	t.Parallel()
	meta := gossip.Meta{Version: gossip.MetaVersion, Algorithm: gossip.Algorithm, Weight: 2, MACs: []string{"02:00:00:00:00:01"}}
	got := PeerStatuses([]gossip.Member{
		{Name: "h1", State: gossip.StateAlive, Meta: meta},
		{Name: "h2", State: gossip.StateAlive, Err: "weight 100000 out of range"},
		{Name: "h3", State: gossip.StateDead, Err: "weight 100000 out of range"},
	})
	if got[0].State != "alive" || got[0].Weight != 2 || len(got[0].MACs) != 1 || got[1].State != MemberRejected || got[1].Error == "" || got[2].State != "dead" {
		t.Errorf("statuses %+v", got)
	}
}
