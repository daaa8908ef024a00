package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestJournalPriorities(t *testing.T) {
	t.Parallel()
	f, err := os.Create(filepath.Join(t.TempDir(), "journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		stream string
		want   []string
	}{
		{fmt.Sprintf("%d:%d", st.Dev, st.Ino), []string{"<7>level=DEBUG msg=d", "<6>level=INFO msg=i a=1", "<4>level=WARN msg=w a=1 g.b=2", "<3>level=ERROR msg=e"}},
		// Another stream (a pipe to a terminal, say): plain lines with time.
		{"1:2", []string{"time=", "time=", "time=", "time="}},
		{"", []string{"time=", "time=", "time=", "time="}},
	} {
		f.Truncate(0)
		f.Seek(0, 0)
		log, err := newLogger("debug", f, tt.stream)
		if err != nil {
			t.Fatal(err)
		}
		log.Debug("d")
		log.With("a", 1).Info("i")
		log.With("a", 1).WithGroup("g").Warn("w", "b", 2)
		log.Error("e")
		b, _ := os.ReadFile(f.Name())
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != len(tt.want) {
			t.Fatalf("JOURNAL_STREAM=%q: logged %q", tt.stream, lines)
		}
		for i, want := range tt.want {
			if !strings.HasPrefix(lines[i], want) {
				t.Errorf("JOURNAL_STREAM=%q: line %q, want it to start with %q", tt.stream, lines[i], want)
			}
		}
	}
}
