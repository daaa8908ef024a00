package spread

import (
	"testing"

	"github.com/arpshare/arpshare/internal/bpf/bpftest"
)

// The committed program is built from the committed source: whoever edits
// spread.c must run `go generate ./internal/bpf/spread`.
func TestGeneratedFromSource(t *testing.T) {
	t.Parallel()
	bpftest.GeneratedFromSource(t, "spread.c", "./internal/bpf/spread")
}
