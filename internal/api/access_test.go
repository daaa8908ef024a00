package api

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestAPIAccess: over the real socket, the kernel's word on the peer
// (SO_PEERCRED) decides who may drain and profile: a peer that is not an
// operator is refused, with who may said, before anything changes.
func TestAPIAccess(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var operatorUID atomic.Int64
	operatorUID.Store(-1)
	a := &Server{path: filepath.Join(t.TempDir(), "api.sock"), ready: make(chan struct{}), pprof: true,
		operators: func(uid int) bool { return int64(uid) == operatorUID.Load() }}
	go a.Run(ctx)
	<-a.ready
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
		return net.Dial("unix", a.path)
	}}}
	do := func(method, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://arpshare"+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// This test's uid is not an operator: refused (the api has no daemon
	// here: reaching the handler would panic).
	for _, p := range []string{"/v1/drain", "/v1/resume"} {
		if code, body := do("POST", p); code != http.StatusForbidden || !strings.Contains(body, "only root and") || !strings.Contains(body, StatusGroup) {
			t.Errorf("POST %s by a reader: %d %q, want 403", p, code, body)
		}
	}
	if code, _ := do("GET", "/debug/pprof/cmdline"); code != http.StatusForbidden {
		t.Errorf("pprof by a reader: %d, want 403", code)
	}
	// This test's uid is the operator.
	operatorUID.Store(int64(os.Geteuid()))
	if code, body := do("GET", "/debug/pprof/cmdline"); code != http.StatusOK || !strings.Contains(body, filepath.Base(os.Args[0])) {
		t.Errorf("pprof by an operator: %d %q", code, body)
	}
}
