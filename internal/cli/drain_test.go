package cli

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/arpshare/arpshare/internal/api"
)

// drainDaemon serves a drain that is done after polls status requests; with
// refuse set, it refuses the drain as the daemon does.
func drainDaemon(t *testing.T, polls int32, refuse string) (socket string, forced *atomic.Bool) {
	t.Helper()
	socket = filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	forced = new(atomic.Bool)
	var asked atomic.Int32
	status := func() api.Status {
		s := api.Status{Node: "h1", Draining: true, Quorum: true, Drain: &api.DrainStatus{Waiting: []string{"h2", "h3"}}}
		if asked.Add(1) > polls {
			s.Drain = &api.DrainStatus{Done: true, Waiting: []string{}}
		}
		s.Explain()
		return s
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/drain", func(w http.ResponseWriter, r *http.Request) {
		forced.Store(r.URL.Query().Get("force") == "true")
		if refuse != "" && !forced.Load() {
			http.Error(w, refuse, http.StatusConflict)
			return
		}
		json.NewEncoder(w).Encode(status())
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(status()) })
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return socket, forced
}

// TestDrainWaits: drain returns once the daemon says the peers are done,
// exits 1 naming the peers when --timeout passes first, and passes --force
// and a refusal through.
func TestDrainWaits(t *testing.T) {
	t.Parallel()
	sock, _ := drainDaemon(t, 3, "")
	if code, out, errs := runCLI("drain", "--socket", sock); code != ExitOK || !strings.Contains(out, "node h1 (NOT SERVING: draining") ||
		!strings.Contains(out, "drained: the other hosts have re-pointed this host's clients") {
		t.Errorf("drain done after 3 polls: exit %d, stdout %q, stderr %q", code, out, errs)
	}

	sock, _ = drainDaemon(t, 1000, "")
	code, _, errs := runCLI("drain", "--socket", sock, "--timeout", "500ms")
	if code != ExitFailure || !strings.Contains(errs, "not done within 500ms") || !strings.Contains(errs, "h2, h3") || !strings.Contains(errs, "stays drained") {
		t.Errorf("drain never done, --timeout 500ms: exit %d, stderr %q; want exit 1 naming h2, h3", code, errs)
	}

	for _, bad := range []string{"soon", "0s", "-1m"} {
		if code, _, errs := runCLI("drain", "--socket", sock, "--timeout", bad); code != ExitUsage || !strings.Contains(errs, "--timeout") {
			t.Errorf("drain --timeout %s: exit %d, stderr %q; want exit 2", bad, code, errs)
		}
	}

	const refusal = "refused: this host is the last eligible host of vip web (198.18.0.200): drained, nobody would answer its clients"
	sock, forced := drainDaemon(t, 0, refusal)
	if code, _, errs := runCLI("drain", "--socket", sock); code != ExitFailure || !strings.Contains(errs, refusal) {
		t.Errorf("refused drain: exit %d, stderr %q; want exit 1 and the refusal", code, errs)
	}
	if code, _, errs := runCLI("drain", "--socket", sock, "--force"); code != ExitOK || !forced.Load() {
		t.Errorf("drain --force: exit %d, stderr %q, forced %v", code, errs, forced.Load())
	}
}
