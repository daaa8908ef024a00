package handover

import (
	"testing"

	"github.com/arpshare/arpshare/internal/bpf/bpftest"
)

// The committed program is built from the committed source: whoever edits
// handover.c must run `go generate ./internal/bpf/handover`.
func TestGeneratedFromSource(t *testing.T) {
	t.Parallel()
	bpftest.GeneratedFromSource(t, "handover.c", "./internal/bpf/handover")
}
