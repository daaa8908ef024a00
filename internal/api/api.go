package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/daemon/repoint"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/bpf/handover"
	"github.com/arpshare/arpshare/internal/bpf/spread"
	"github.com/arpshare/arpshare/internal/config"
	"github.com/arpshare/arpshare/internal/propose"
)

// Status is what `arpshare status` shows: this host's view of the cluster.
// It is the API's own type, with readable field names documented in
// arpshare(8); the gossip wire format stays private to the gossip package.
type Status struct {
	Node    string `json:"node"`
	Version string `json:"version"`
	// Serving is true when this host serves every VIP; NotServing says why
	// not, one reason each. `arpshare status` exits non-zero without it.
	Serving    bool     `json:"serving"`
	NotServing []string `json:"not_serving"`
	Draining   bool     `json:"draining"`
	// Drain says, while this host drains, whether the others have taken
	// its clients.
	Drain *DrainStatus `json:"drain,omitempty"`
	// Quorum is false while this host sees fewer than a majority of
	// Expect hosts (0: not set), and then it answers nobody.
	Quorum bool `json:"quorum"`
	Expect int  `json:"expect,omitempty"`
	// Join is member, alone or rejected (see gossip.View.JoinState);
	// JoinCause says why peers refuse this host, and what to do.
	Join      string         `json:"join"`
	JoinCause string         `json:"join_cause,omitempty"`
	Members   []MemberStatus `json:"members"`
	VIPs      []VIPStatus    `json:"vips"`
	// Repointing is the re-pointing round in progress, at node.repoint_rate.
	Repointing RepointStatus `json:"repointing"`
	// Handover: whether moved clients' open connections are handed to
	// their previous owner, and which are now.
	Handover handover.Status `json:"handover"`
	// Spread: whether routed clients' flows are spread over the hosts.
	Spread spread.Status `json:"spread"`
	// Proposals: the watching for routers (node.propose_routers).
	Proposals propose.Status `json:"router_proposals"`
}

// RepointStatus is the re-pointing round in progress.
type RepointStatus = repoint.Status

// MemberStatus is one cluster member as this host sees it.
type MemberStatus struct {
	Name    string         `json:"name"`
	Address netip.AddrPort `json:"address"` // its gossip address
	// State is alive or dead, or rejected (see MemberRejected).
	State string `json:"state"`
	// Unreachable: gossip still lists the member, but this host's own
	// probes of it have gone unanswered lately.
	Unreachable bool `json:"unreachable"`
	// Error says why its metadata is not trusted (then it gets no clients
	// and does not count toward quorum).
	Error    string `json:"error,omitempty"`
	Weight   int    `json:"weight"`
	Draining bool   `json:"draining"`
	// HealthyVIPs and UnhealthyVIPs are the addresses it serves, by the
	// result of their health check there.
	HealthyVIPs   []netip.Addr `json:"healthy_vips"`
	UnhealthyVIPs []netip.Addr `json:"unhealthy_vips"`
	// MACs are its serving interfaces' hardware addresses.
	MACs []string `json:"macs"`
	// MetadataVersion and Algorithm are the versions of the gossip
	// metadata and of the ownership function it runs.
	MetadataVersion int `json:"metadata_version"`
	Algorithm       int `json:"ownership_algorithm"`
	// MinMetadataVersion is the oldest metadata version it speaks, and
	// Software its release ("" from a build before it was gossiped).
	MinMetadataVersion int    `json:"min_metadata_version,omitempty"`
	Software           string `json:"software,omitempty"`
}

// memberStatuses converts the gossip view's members for the API.
func memberStatuses(ms []gossip.Member) []MemberStatus {
	out := []MemberStatus{}
	for _, m := range ms {
		out = append(out, MemberStatus{
			Name: m.Name, Address: m.Addr, State: string(m.State), Unreachable: m.Unreachable, Error: m.Err,
			Weight: m.Meta.Weight, Draining: m.Meta.Draining,
			HealthyVIPs:     append([]netip.Addr{}, m.Meta.VIPs...),
			UnhealthyVIPs:   append([]netip.Addr{}, m.Meta.Unhealthy...),
			MACs:            append([]string{}, m.Meta.MACs...),
			MetadataVersion: m.Meta.Version, Algorithm: m.Meta.Algorithm,
			MinMetadataVersion: m.Meta.MinVersion, Software: m.Meta.Software,
		})
	}
	return out
}

// Explain sets Serving and NotServing from the rest of the status.
func (s *Status) Explain() {
	s.NotServing = []string{}
	if !s.Quorum {
		s.NotServing = append(s.NotServing, fmt.Sprintf("no quorum: fewer than a majority of gossip.expect = %d hosts in sight", s.Expect))
	}
	if s.Join == gossip.JoinRejected {
		s.NotServing = append(s.NotServing, "rejected by its peers: "+s.JoinCause)
	}
	if s.Draining {
		s.NotServing = append(s.NotServing, "draining (arpshare resume undoes it)")
	}
	for _, v := range s.VIPs {
		switch {
		case v.Link != "":
			s.NotServing = append(s.NotServing, fmt.Sprintf("vip %s: %s", v.Name, v.Link))
		case !v.Answering:
			s.NotServing = append(s.NotServing, fmt.Sprintf("vip %s: interface %s missing or down", v.Name, v.Interface))
		}
		if !v.Healthy && !v.Fallback {
			s.NotServing = append(s.NotServing, fmt.Sprintf("vip %s: health check fails", v.Name))
		}
	}
	s.Serving = len(s.NotServing) == 0
}

// VIPStatus is one VIP as this host sees it.
type VIPStatus struct {
	Name      string      `json:"name"`
	Address   netip.Addr  `json:"address"`
	Interface string      `json:"interface"`
	Mode      policy.Mode `json:"mode"`
	// Answering is false while the interface is missing or down.
	Answering bool `json:"answering"`
	// Healthy is this host's check result (true without a check).
	Healthy bool `json:"healthy"`
	// Link says why this host's link cannot serve the VIP ("link eth0: no
	// carrier"), which makes it ineligible as a failed check does; empty
	// while it can.
	Link string `json:"link,omitempty"`
	// Fallback is true when no host passes the check, so all live hosts answer.
	Fallback  bool     `json:"fallback"`
	Eligible  []string `json:"eligible"`
	Unhealthy []string `json:"unhealthy"` // live hosts failing the check
	// Clients is how many clients of the VIP this host knows.
	Clients int `json:"clients"`
	// Owners counts the known clients each eligible host answers.
	Owners map[string]int `json:"owners"`
	// Frames counts the ARP or NDP messages about this VIP, by outcome.
	Frames map[string]uint64 `json:"frames"`
	// KernelFrames is the part of Frames the kernel fast path decided on.
	KernelFrames map[string]uint64 `json:"kernel_frames,omitempty"`
	// ProposedRouters are neighbours that forward new connections from
	// several addresses to the VIP (node.propose_routers), not in
	// vip.routers: candidates for it, never applied.
	ProposedRouters []propose.Proposal `json:"proposed_routers,omitempty"`
}

// api serves Status on a unix socket, and Go's pprof with api.pprof: the
// socket is the daemon's user's and group's (or StatusGroup's) only, where
// the metrics port is open to the network; draining, resuming and pprof
// take root or the daemon's user (access.go).
type Server struct {
	path    string
	backend Backend
	log     *slog.Logger
	ready   chan struct{}
	pprof   bool
	limits  serverLimits // zero: apiLimits
	// operators says which peer uids may drain, resume and profile
	// (nil: root and the daemon's user; see access.go).
	operators func(uid int) bool
}

// ClientStatus is one known client, for `arpshare clients`.
type ClientStatus struct {
	VIP      string     `json:"vip"` // the VIP's name
	IP       netip.Addr `json:"ip"`
	MAC      string     `json:"mac"`
	LastSeen time.Time  `json:"last_seen"`
	Owner    string     `json:"owner"` // empty in race mode, or when no host may answer
}

// OwnerStatus answers `arpshare owner VIP CLIENT`.
type OwnerStatus struct {
	VIP      string      `json:"vip"`
	Address  netip.Addr  `json:"address"`
	Mode     policy.Mode `json:"mode"`
	Client   netip.Addr  `json:"client"`
	Owner    string      `json:"owner"`    // who answers it (race: who re-points it)
	Eligible []string    `json:"eligible"` // who could
	Known    bool        `json:"known"`    // whether this host has seen the client
	MAC      string      `json:"mac,omitempty"`
	Quorum   bool        `json:"quorum"`
}

// newAPIServer serves b on the unix socket at path, with Go's pprof if
// pprof.
func NewServer(path string, b Backend, log *slog.Logger, pprof bool) *Server {
	return &Server{path: path, backend: b, log: log, pprof: pprof, ready: make(chan struct{})}
}

// socket is the path of the API's socket.
func (a *Server) Socket() string { return a.path }

// Backend is what the API serves: the daemon's answers.
type Backend interface {
	Status() Status
	Clients(vip string) ([]ClientStatus, error)
	Owner(vip, client string) (OwnerStatus, error)
	// SetDrained drains or resumes this host; a drain that would leave a
	// VIP to nobody is refused with a *RefusedError unless force is set.
	SetDrained(ctx context.Context, drained, force bool) error
}

// writeList writes items as one JSON array, an item at a time: a table of
// a million clients is not encoded into one buffer first, as
// json.Encoder.Encode would.
func writeList[T any](w io.Writer, items []T) {
	b := bufio.NewWriter(w)
	e := json.NewEncoder(b)
	b.WriteByte('[')
	for i := range items {
		if i > 0 {
			b.WriteByte(',')
		}
		if e.Encode(items[i]) != nil {
			return
		}
	}
	b.WriteString("]\n")
	b.Flush()
}

func (a *Server) String() string         { return "api on " + a.path }
func (a *Server) Ready() <-chan struct{} { return a.ready }
func (a *Server) handler() http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any, err error) {
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		reply(w, a.backend.Status(), nil)
	})
	mux.HandleFunc("GET /v1/clients", func(w http.ResponseWriter, r *http.Request) {
		cs, err := a.backend.Clients(r.URL.Query().Get("vip"))
		if err != nil {
			reply(w, nil, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		writeList(w, cs)
	})
	mux.HandleFunc("GET /v1/owner", func(w http.ResponseWriter, r *http.Request) {
		o, err := a.backend.Owner(r.URL.Query().Get("vip"), r.URL.Query().Get("client"))
		reply(w, o, err)
	})
	for path, drained := range map[string]bool{"POST /v1/drain": true, "POST /v1/resume": false} {
		mux.HandleFunc(path, a.onlyOperators(func(w http.ResponseWriter, r *http.Request) {
			force := r.URL.Query().Get("force") == "true"
			var refused *RefusedError
			switch err := a.backend.SetDrained(r.Context(), drained, force); {
			case errors.As(err, &refused):
				http.Error(w, err.Error(), http.StatusConflict)
			case err != nil:
				http.Error(w, err.Error(), http.StatusInternalServerError)
			default:
				reply(w, a.backend.Status(), nil)
			}
		}))
	}
	if a.pprof {
		pp := http.NewServeMux()
		handlePprof(pp)
		mux.Handle("/debug/pprof/", a.onlyOperators(pp.ServeHTTP))
	}
	return mux
}

func (a *Server) Run(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(a.path), 0o755); err != nil {
		return fmt.Errorf("api socket %s: %w", a.path, err)
	}
	// A socket file left by a killed daemon would make Listen fail.
	if err := os.Remove(a.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("api socket %s: %w", a.path, err)
	}
	l, err := net.Listen("unix", a.path)
	if err != nil {
		return fmt.Errorf("api socket %s: %w", a.path, err)
	}
	if err := os.Chmod(a.path, 0o660); err != nil {
		l.Close()
		return fmt.Errorf("api socket %s: %w", a.path, err)
	}
	group, err := shareSocket(a.path)
	if err != nil {
		l.Close()
		return fmt.Errorf("api socket %s: group %s: %w", a.path, StatusGroup, err)
	}
	if group != "" && a.log != nil {
		a.log.Debug("api socket readable by group", "socket", a.path, "group", group)
	}
	l = peerListener{l}
	defer os.Remove(a.path)
	lim := a.limits
	if lim == (serverLimits{}) {
		lim = apiLimits
	}
	close(a.ready)
	if err := serve(ctx, l, a.handler(), lim); err != nil {
		return fmt.Errorf("api socket %s: %w", a.path, err)
	}
	return nil
}

// GetStatus asks the daemon listening on socket for its status.
func GetStatus(ctx context.Context, socket string) (Status, error) {
	var s Status
	return s, call(ctx, socket, http.MethodGet, "/v1/status", &s)
}

// Drain asks the daemon to drain (or resume) and returns its new status. A
// drain that would leave a VIP to nobody is refused unless force is set.
// The drain is done once Status.Drain says so.
func Drain(ctx context.Context, socket string, drained, force bool) (Status, error) {
	path := "/v1/resume"
	if drained {
		path = "/v1/drain?" + url.Values{"force": {fmt.Sprint(force)}}.Encode()
	}
	var s Status
	return s, call(ctx, socket, http.MethodPost, path, &s)
}

// GetClients asks the daemon for its known clients, of one VIP (by name or
// address) or, with vip empty, of all.
func GetClients(ctx context.Context, socket, vip string) ([]ClientStatus, error) {
	var cs []ClientStatus
	return cs, call(ctx, socket, http.MethodGet, "/v1/clients?"+url.Values{"vip": {vip}}.Encode(), &cs)
}

// GetOwner asks the daemon which host answers client for vip.
func GetOwner(ctx context.Context, socket, vip, client string) (OwnerStatus, error) {
	var o OwnerStatus
	return o, call(ctx, socket, http.MethodGet, "/v1/owner?"+url.Values{"vip": {vip}, "client": {client}}.Encode(), &o)
}

func call(ctx context.Context, socket, method, path string, out any) error {
	// One request a connection: a connection kept open for reuse by a
	// Transport made for one call would hold one of the server's
	// connection slots until its idle timeout.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	req, err := http.NewRequestWithContext(ctx, method, "http://arpshare"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("ask daemon at %s: %w", socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("daemon at %s: %s", socket, bytes.TrimSpace(msg))
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("ask daemon at %s: %w", socket, err)
	}
	return nil
}

// MemberRejected is the state status shows for a live member whose gossiped
// metadata this host rejects (out of range, another version): it gets no
// clients and does not count toward quorum; its error says why.
const MemberRejected = "rejected"

// peerStatuses lists the members for status, a live member whose metadata
// is rejected as MemberRejected.
func PeerStatuses(ms []gossip.Member) []MemberStatus {
	out := memberStatuses(ms)
	for i, m := range ms {
		if m.Err != "" && m.State == gossip.StateAlive {
			out[i].State = MemberRejected
		}
	}
	return out
}

// RefusedError is a drain refused because it would leave VIPs unanswered.
type RefusedError struct{ VIPs []config.VIP }

func (e *RefusedError) Error() string {
	var names []string
	for _, v := range e.VIPs {
		names = append(names, fmt.Sprintf("vip %s (%s)", v.Name, v.Address))
	}
	return "refused: this host is the last eligible host of " + strings.Join(names, ", ") +
		": drained, nobody would answer its clients. Bring another host back first (`arpshare status` lists the eligible hosts), " +
		"or, to shut the whole cluster down, `arpshare drain --force`"
}

// DrainStatus says how far the other hosts are in taking the clients of
// this drained (or stopping) host.
type DrainStatus struct {
	// Done: every live peer that serves one of this host's VIPs has
	// re-pointed the clients that this host's view gives it.
	Done bool `json:"done"`
	// Waiting names the peers that have not yet.
	Waiting []string `json:"waiting"`
}
