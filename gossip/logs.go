package gossip

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arpshare/arpshare/internal/clock"
)

// Memberlist logs from its only UDP reader, synchronously, a line for every
// datagram it refuses (a wrong label, a failed decryption), before any key
// check: whoever can reach the gossip port can make it log. Its lines are
// therefore rate-limited, by level, and those suppressed are counted.
var logBudgets = map[slog.Level]struct {
	burst int     // lines at once
	rate  float64 // lines a second, after the burst
}{
	slog.LevelDebug: {burst: 50, rate: 20},
	slog.LevelInfo:  {burst: 20, rate: 2},
	slog.LevelWarn:  {burst: 20, rate: 2},
	slog.LevelError: {burst: 20, rate: 2},
}

// logLevels are memberlist's level prefixes ("[WARN] memberlist: ...").
var logLevels = []struct {
	prefix []byte
	level  slog.Level
}{
	{[]byte("[DEBUG] "), slog.LevelDebug},
	{[]byte("[INFO] "), slog.LevelInfo},
	{[]byte("[WARN] "), slog.LevelWarn},
	{[]byte("[ERR] "), slog.LevelError},
	{[]byte("[ERROR] "), slog.LevelError},
}

// lineFields are the shapes of memberlist's lines whose parts this package
// also logs as fields: member, a member's node name; address, its gossip
// address; accuser, the member that reported this host suspect or dead;
// error, what failed. A line keeps memberlist's words (an error moves out
// of the message into its field); the first shape that matches applies.
var lineFields = []struct {
	re     *regexp.Regexp
	fields []string // the names of re's groups; "": the group is the message
}{
	{regexp.MustCompile(`^Initiating push/pull sync with: (\S*) (\S+)$`), []string{"member", "address"}},
	{regexp.MustCompile(`^Suspect (\S+) has failed, no acks received$`), []string{"member"}},
	{regexp.MustCompile(`^Marking (\S+) as failed, suspect timeout reached \((\d+) peer confirmations\)$`), []string{"member", "confirmations"}},
	{regexp.MustCompile(`^Failed UDP ping: (\S+) \(timeout reached\)$`), []string{"member"}},
	{regexp.MustCompile(`^Refuting a (?:suspect|dead) message \(from: (\S+)\)$`), []string{"accuser"}},
	{regexp.MustCompile(`^Was able to connect to (\S+) over TCP but UDP probes failed`), []string{"member"}},
	{regexp.MustCompile(`^Conflicting address for (\S+)\. `), []string{"member"}},
	{regexp.MustCompile(`^(Push/Pull with (\S+) failed): (.+)$`), []string{"", "member", "error"}},
	{regexp.MustCompile(`^((?:Failed|failed|Decrypt packet failed|Error)[^:"]*): (.+)$`), []string{"", "error"}},
}

// fromAddr is memberlist's " from=ADDRESS" at the end of a line about a
// datagram or connection: the address it came from.
const fromAddr = " from="

// parseLine reads one of memberlist's lines: its level, its message
// ("memberlist: " and memberlist's words) and the fields lineFields and
// fromAddr find. A line of another shape is logged whole at info.
func parseLine(p []byte) (level slog.Level, msg string, attrs []any) {
	line := bytes.TrimSpace(p)
	level = slog.LevelInfo
	for _, l := range logLevels {
		if rest, ok := bytes.CutPrefix(line, l.prefix); ok {
			line, level = rest, l.level
			break
		}
	}
	text, ok := strings.CutPrefix(string(line), "memberlist: ")
	if !ok {
		return level, string(line), nil
	}
	if i := strings.LastIndex(text, fromAddr); i >= 0 {
		addr := text[i+len(fromAddr):]
		if _, err := netip.ParseAddrPort(addr); err == nil || addr == "<unknown address>" {
			attrs = append(attrs, "from", addr)
			text = strings.TrimSuffix(text[:i], ":")
		}
	}
	for _, f := range lineFields {
		m := f.re.FindStringSubmatchIndex(text)
		if m == nil {
			continue
		}
		keep := ""
		for g, name := range f.fields {
			lo, hi := m[2+2*g], m[3+2*g]
			switch {
			case lo == hi: // an empty group (a join's push-pull has no name)
			case name == "":
				keep = text[lo:hi]
			default:
				attrs = append(attrs, name, text[lo:hi])
			}
		}
		if keep != "" {
			text = keep
		}
		break
	}
	return level, "memberlist: " + text, attrs
}

// bucket is a token bucket: burst tokens, refilled at rate a second.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) take(now time.Time, burst int, rate float64) bool {
	if b.last.IsZero() {
		b.tokens = float64(burst)
	} else {
		b.tokens = min(float64(burst), b.tokens+now.Sub(b.last).Seconds()*rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// logLimiter holds the buckets and the count of suppressed lines by level.
type logLimiter struct {
	mu      sync.Mutex
	buckets map[slog.Level]*bucket
	pending map[slog.Level]int // suppressed since the last line let through
	// suppressed counts lines dropped, by level, for the metric.
	suppressed map[slog.Level]*atomic.Uint64
}

func newLogLimiter() *logLimiter {
	l := &logLimiter{buckets: map[slog.Level]*bucket{}, pending: map[slog.Level]int{}, suppressed: map[slog.Level]*atomic.Uint64{}}
	for level := range logBudgets {
		l.buckets[level] = &bucket{}
		l.suppressed[level] = &atomic.Uint64{}
	}
	return l
}

// allow reports whether a line at level may be logged now, and how many at
// that level were suppressed before it (to say so once).
func (l *logLimiter) allow(level slog.Level, now time.Time) (ok bool, before int) {
	budget := logBudgets[level]
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.buckets[level].take(now, budget.burst, budget.rate) {
		l.pending[level]++
		l.suppressed[level].Add(1)
		return false, 0
	}
	before = l.pending[level]
	l.pending[level] = 0
	return true, before
}

// Suppressed returns how many of memberlist's log lines were dropped, by
// level name (debug, info, warn, error).
func (l *logLimiter) Suppressed() map[string]uint64 {
	out := map[string]uint64{}
	for level, n := range l.suppressed {
		out[strings.ToLower(level.String())] = n.Load()
	}
	return out
}

// logWriter turns memberlist's "[LEVEL] memberlist: ..." lines into slog
// records with their level and fields (parseLine), within the limiter's
// budget. A line is only ever logged, never acted on: memberlist puts text
// it received from strangers (a label, a node name) into it.
type logWriter struct {
	l     *slog.Logger
	limit *logLimiter
	clock clock.Clock
}

func (w logWriter) Write(p []byte) (int, error) {
	level, msg, attrs := parseLine(p)
	ctx := context.Background()
	if !w.l.Enabled(ctx, level) {
		return len(p), nil
	}
	ok, before := w.limit.allow(level, w.clock.Now())
	if !ok {
		return len(p), nil
	}
	if before > 0 {
		w.l.Log(ctx, max(level, slog.LevelWarn), "memberlist logged too much: lines suppressed", "level", level.String(), "suppressed", before)
	}
	w.l.Log(ctx, level, msg, attrs...)
	return len(p), nil
}
