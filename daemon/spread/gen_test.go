package spread

import (
	"testing"

	"github.com/arpshare/arpshare/internal/bpftest"
)

// The committed program is built from the committed source: whoever edits
// spread.c must run `go generate ./daemon/spread`.
func TestGeneratedFromSource(t *testing.T) {
	t.Parallel()
	bpftest.GeneratedFromSource(t, "spread.c", "./daemon/spread")
}
