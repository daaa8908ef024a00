package handover

import (
	"testing"

	"github.com/arpshare/arpshare/internal/bpftest"
)

// The committed program is built from the committed source: whoever edits
// handover.c must run `go generate ./daemon/handover`.
func TestGeneratedFromSource(t *testing.T) {
	t.Parallel()
	bpftest.GeneratedFromSource(t, "handover.c", "./daemon/handover")
}
