package lab

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeNeigh points the neighbour limits at files under a temporary folder,
// holding the kernel's defaults, and returns a reader of them.
func fakeNeigh(t *testing.T) func() []int {
	t.Helper()
	dir := t.TempDir()
	oldSys, oldDir := neighSys, neighDir
	neighSys, neighDir = filepath.Join(dir, "sys"), filepath.Join(dir, "run")
	t.Cleanup(func() { neighSys, neighDir = oldSys, oldDir })
	for i, k := range neighKeys {
		p := filepath.Join(neighSys, k)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(strconv.Itoa([]int{128, 512, 1024}[i%3])+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return func() []int {
		v, err := readNeigh()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// A big lab raises the limits of both families and puts them back; two labs
// side by side keep them raised until the second closes; a small lab
// changes nothing.
func TestNeighbourLimits(t *testing.T) {
	read := fakeNeigh(t)
	defaults := []int{128, 512, 1024, 128, 512, 1024}

	small, err := raiseNeighbourLimits("small", neighEntries(3, 20))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(defaults, read()); diff != "" {
		t.Errorf("a 3-host lab changed the limits (-want +got):\n%s", diff)
	}

	e := neighEntries(64, 40)
	w := neighWant(e)
	big := []int{w[0], w[1], w[2], w[0], w[1], w[2]}
	first, err := raiseNeighbourLimits("first", e)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(big, read()); diff != "" {
		t.Errorf("a 64-host lab (-want +got):\n%s", diff)
	}
	second, err := raiseNeighbourLimits("second", neighEntries(32, 20))
	if err != nil {
		t.Fatal(err)
	}
	// A lab that died without closing holds nothing.
	if err := os.WriteFile(filepath.Join(neighDir, "lease-dead"), []byte(strconv.Itoa(deadPID(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := first(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(big, read()); diff != "" {
		t.Errorf("released while another lab runs (-want +got):\n%s", diff)
	}
	if err := second(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(defaults, read()); diff != "" {
		t.Errorf("after the last lab closed (-want +got):\n%s", diff)
	}
	if err := small(); err != nil {
		t.Fatal(err)
	}
	left, _ := filepath.Glob(filepath.Join(neighDir, "*"))
	if diff := cmp.Diff([]string{filepath.Join(neighDir, "lock")}, left); diff != "" {
		t.Errorf("left in %s (-want +got):\n%s", neighDir, diff)
	}
}

// deadPID returns the ID of a process that has exited.
func deadPID(t *testing.T) int {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// The thresholds follow the lab's size.
func TestNeighEntries(t *testing.T) {
	for _, c := range []struct{ hosts, clients, want int }{{3, 20, 129}, {32, 20, 2304}, {64, 40, 9216}} {
		if got := neighEntries(c.hosts, c.clients); got != c.want {
			t.Errorf("neighEntries(%d, %d) = %d, want %d", c.hosts, c.clients, got, c.want)
		}
	}
	if got := neighWant(1000); got != [3]int{1000, 2000, 4000} {
		t.Errorf("thresholds for 1000 entries: %v", got)
	}
}
