package cli

import (
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/arpshare/arpshare/internal/api"
)

// echoDaemon answers clients and owner as the daemon's API does, and
// records the query of each call, to see what the command line asked.
func echoDaemon(t *testing.T) (socket string, asked func() []string) {
	t.Helper()
	socket = filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var queries []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/clients", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		queries = append(queries, "clients "+r.URL.RawQuery)
		mu.Unlock()
		json.NewEncoder(w).Encode([]api.ClientStatus{{VIP: "web", IP: netip.MustParseAddr("192.0.2.57"), MAC: "02:00:00:00:00:01", Owner: "h1"}})
	})
	mux.HandleFunc("GET /v1/owner", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		queries = append(queries, "owner "+r.URL.RawQuery)
		mu.Unlock()
		json.NewEncoder(w).Encode(api.OwnerStatus{VIP: "web", Owner: "h1", Eligible: []string{"h1"}, Quorum: true})
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return socket, func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := queries
		queries = nil
		return out
	}
}

// TestFlagsAnywhere: flags may come before, between and after the
// arguments, as ip, systemctl and git take them; "--" ends them. A VIP is an
// argument in every command, by name or address, and --vip gives the same
// argument as a flag.
func TestFlagsAnywhere(t *testing.T) {
	t.Parallel()
	sock, asked := echoDaemon(t)
	for _, tt := range []struct {
		args  []string
		query string // what the daemon was asked
		json  bool   // the output is JSON
	}{
		{[]string{"owner", "web", "192.0.2.57", "--json", "--socket", sock}, "owner client=192.0.2.57&vip=web", true},
		{[]string{"owner", "--socket", sock, "web", "--json", "192.0.2.57"}, "owner client=192.0.2.57&vip=web", true},
		{[]string{"owner", "198.18.0.100", "192.0.2.57", "-socket=" + sock}, "owner client=192.0.2.57&vip=198.18.0.100", false},
		{[]string{"owner", "192.0.2.57", "--vip", "web", "--socket", sock}, "owner client=192.0.2.57&vip=web", false},
		{[]string{"clients", "web", "--socket", sock, "--json"}, "clients vip=web", true},
		{[]string{"clients", "--socket", sock, "198.18.0.100"}, "clients vip=198.18.0.100", false},
		{[]string{"clients", "--vip", "web", "--socket", sock}, "clients vip=web", false},
		{[]string{"clients", "--socket", sock}, "clients vip=", false},
		// After --, "--json" is an argument: here, the VIP.
		{[]string{"clients", "--socket", sock, "--", "--json"}, "clients vip=--json", false},
	} {
		code, out, errs := runCLI(tt.args...)
		got := asked()
		if code != ExitOK || len(got) != 1 {
			t.Errorf("arpshare %q: exit %d, asked %q, stdout %q, stderr %q", tt.args, code, got, out, errs)
			continue
		}
		if got[0] != tt.query {
			t.Errorf("arpshare %q asked %q, want %q", tt.args, got[0], tt.query)
		}
		if isJSON := json.Valid([]byte(out)); isJSON != tt.json {
			t.Errorf("arpshare %q: JSON output %v, want %v: %q", tt.args, isJSON, tt.json, out)
		}
	}
	for _, tt := range []struct {
		args []string
		err  string
	}{
		{[]string{"owner", "web", "192.0.2.57", "extra", "--socket", sock}, `unexpected argument "extra"`},
		{[]string{"owner", "web", "--socket", sock}, "missing CLIENT"},
		{[]string{"owner", "web", "192.0.2.57", "--socket"}, "flag needs an argument: -socket"},
		{[]string{"clients", "web", "--vip", "api", "--socket", sock}, `unexpected argument "web"`},
		{[]string{"clients", "web", "--bogus", "--socket", sock}, "flag provided but not defined: -bogus"},
		{[]string{"check", "--", "--offline"}, `unexpected argument "--offline"`},
	} {
		code, out, errs := runCLI(tt.args...)
		if code != ExitUsage || !strings.Contains(errs, tt.err) {
			t.Errorf("arpshare %q: exit %d, stdout %q, stderr %q; want exit %d and %q", tt.args, code, out, errs, ExitUsage, tt.err)
		}
		if got := asked(); len(got) != 0 {
			t.Errorf("arpshare %q asked the daemon %q", tt.args, got)
		}
	}
}
