package handover

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// The committed program is built from the committed source: whoever edits
// handover.c must run `go generate ./daemon/handover`.
func TestGeneratedFromSource(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("handover.c")
	if err != nil {
		t.Fatal(err)
	}
	recorded, err := os.ReadFile("handover.c.sha256")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(src)
	if got, want := strings.Fields(string(recorded))[0], hex.EncodeToString(sum[:]); got != want {
		t.Errorf("handover.c changed since the program was generated (sha256 %s, recorded %s): run go generate ./daemon/handover", want, got)
	}
}
