package gossip

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/arpshare/arpshare/internal/clock"
)

// TestParseLine reads lines as memberlist formats them (its own format
// strings, filled in): the level, memberlist's words, and the fields.
func TestParseLine(t *testing.T) {
	t.Parallel()
	from := "from=198.18.0.12:40312"
	for _, tt := range []struct {
		line  string
		level slog.Level
		msg   string
		attrs []any
	}{
		{fmt.Sprintf("[DEBUG] memberlist: Stream connection %s", from), slog.LevelDebug,
			"memberlist: Stream connection", []any{"from", "198.18.0.12:40312"}},
		{fmt.Sprintf("[DEBUG] memberlist: Initiating push/pull sync with: %s %s", "h2", "198.18.0.12:7946"), slog.LevelDebug,
			"memberlist: Initiating push/pull sync with: h2 198.18.0.12:7946", []any{"member", "h2", "address", "198.18.0.12:7946"}},
		// A join's: no node name yet.
		{fmt.Sprintf("[DEBUG] memberlist: Initiating push/pull sync with: %s %s", "", "198.18.0.12:7946"), slog.LevelDebug,
			"memberlist: Initiating push/pull sync with:  198.18.0.12:7946", []any{"address", "198.18.0.12:7946"}},
		{fmt.Sprintf("[INFO] memberlist: Suspect %s has failed, no acks received", "h3"), slog.LevelInfo,
			"memberlist: Suspect h3 has failed, no acks received", []any{"member", "h3"}},
		{fmt.Sprintf("[INFO] memberlist: Marking %s as failed, suspect timeout reached (%d peer confirmations)", "h3", 1), slog.LevelInfo,
			"memberlist: Marking h3 as failed, suspect timeout reached (1 peer confirmations)", []any{"member", "h3", "confirmations", "1"}},
		{fmt.Sprintf("[DEBUG] memberlist: Failed UDP ping: %s (timeout reached)", "h3"), slog.LevelDebug,
			"memberlist: Failed UDP ping: h3 (timeout reached)", []any{"member", "h3"}},
		{fmt.Sprintf("[WARN] memberlist: Refuting a suspect message (from: %s)", "h1"), slog.LevelWarn,
			"memberlist: Refuting a suspect message (from: h1)", []any{"accuser", "h1"}},
		{fmt.Sprintf("[WARN] memberlist: Was able to connect to %s over TCP but UDP probes failed, network may be misconfigured", "h2"), slog.LevelWarn,
			"memberlist: Was able to connect to h2 over TCP but UDP probes failed, network may be misconfigured", []any{"member", "h2"}},
		{fmt.Sprintf("[ERR] memberlist: Push/Pull with %s failed: %s", "h2", "dial tcp 198.18.0.12:7946: i/o timeout"), slog.LevelError,
			"memberlist: Push/Pull with h2 failed", []any{"member", "h2", "error", "dial tcp 198.18.0.12:7946: i/o timeout"}},
		{fmt.Sprintf("[ERR] memberlist: Decrypt packet failed: %v %s", "no installed keys could decrypt the message", from), slog.LevelError,
			"memberlist: Decrypt packet failed", []any{"from", "198.18.0.12:40312", "error", "no installed keys could decrypt the message"}},
		{fmt.Sprintf("[ERR] memberlist: Failed fallback TCP ping: %s%s", "timeout 1s: ", "read tcp: i/o timeout"), slog.LevelError,
			"memberlist: Failed fallback TCP ping", []any{"error", "timeout 1s: read tcp: i/o timeout"}},
		{fmt.Sprintf("[ERROR] memberlist: Failed to compress payload: %v", "too big"), slog.LevelError,
			"memberlist: Failed to compress payload", []any{"error", "too big"}},
		// A stranger's label, " from=" and all, stays in the message;
		// only memberlist's own address at the end is the field.
		{fmt.Sprintf("[ERR] memberlist: discarding packet with unacceptable label %q: %s", "x from=192.0.2.1:1", "from=[fd00::12]:7946"), slog.LevelError,
			`memberlist: discarding packet with unacceptable label "x from=192.0.2.1:1"`, []any{"from", "[fd00::12]:7946"}},
		{"[ERR] memberlist: failed to receive: EOF from=<unknown address>", slog.LevelError,
			"memberlist: failed to receive", []any{"from", "<unknown address>", "error", "EOF"}},
		// Not an address: left in the message.
		{"[WARN] memberlist: Got ping for unexpected node 'x' from=somewhere", slog.LevelWarn,
			"memberlist: Got ping for unexpected node 'x' from=somewhere", nil},
		{"[ERR] memberlist: Failed to parse address \"a:b\": bad", slog.LevelError,
			"memberlist: Failed to parse address \"a:b\": bad", nil},
		{"something else entirely\n", slog.LevelInfo, "something else entirely", nil},
	} {
		level, msg, attrs := parseLine([]byte(tt.line + "\n"))
		if level != tt.level || msg != tt.msg || !cmp.Equal(attrs, tt.attrs) {
			t.Errorf("%q:\n got %s %q %q\nwant %s %q %q", tt.line, level, msg, attrs, tt.level, tt.msg, tt.attrs)
		}
	}
}

// TestLogWriterFields: a line reaches slog with its level and its fields as
// attributes, as the text handler prints them.
func TestLogWriterFields(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	w := logWriter{l: slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})), limit: newLogLimiter(), clock: clock.Real{}}
	w.Write([]byte("[WARN] memberlist: Refuting a dead message (from: h1)\n"))
	w.Write([]byte("[DEBUG] memberlist: Stream connection from=198.18.0.12:40312\n"))
	got := b.String()
	for _, want := range []string{
		`level=WARN msg="memberlist: Refuting a dead message (from: h1)" accuser=h1`,
		`level=DEBUG msg="memberlist: Stream connection" from=198.18.0.12:40312`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("logged:\n%s\nwant a line with %s", got, want)
		}
	}
}
