package bpftest

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"testing"
)

func TestGeneratedFromSource(t *testing.T) {
	t.Chdir(t.TempDir())
	sum := sha256.Sum256([]byte("int x;\n"))
	if err := os.WriteFile("x.c", []byte("int x;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("x.c.sha256", []byte(hex.EncodeToString(sum[:])+"  x.c\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	GeneratedFromSource(t, "x.c", "./x") // fails the test if it disagrees
	if err := os.WriteFile("x.c", []byte("int y;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var inner testing.T
	GeneratedFromSource(&inner, "x.c", "./x")
	if !inner.Failed() {
		t.Error("an edited source passed")
	}
}
