package fastpath

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// The committed program is built from the committed source: whoever edits
// fastpath.c must run `go generate ./arp/fastpath`.
func TestGeneratedFromSource(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("fastpath.c")
	if err != nil {
		t.Fatal(err)
	}
	recorded, err := os.ReadFile("fastpath.c.sha256")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(src)
	if got, want := strings.Fields(string(recorded))[0], hex.EncodeToString(sum[:]); got != want {
		t.Errorf("fastpath.c changed since the program was generated (sha256 %s, recorded %s): run go generate ./arp/fastpath", want, got)
	}
}
