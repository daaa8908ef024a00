package fastpath

import (
	"testing"

	"github.com/arpshare/arpshare/internal/bpf/bpftest"
)

// The committed program is built from the committed source: whoever edits
// fastpath.c must run `go generate ./internal/bpf/fastpath`.
func TestGeneratedFromSource(t *testing.T) {
	t.Parallel()
	bpftest.GeneratedFromSource(t, "fastpath.c", "./internal/bpf/fastpath")
}
