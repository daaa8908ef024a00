package gossip

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Memberlist logs from its only UDP reader, synchronously, a line for every
// datagram it refuses (a wrong label, a failed decryption), before any key
// check: whoever can reach the gossip port can make it log. Its lines are
// therefore rate-limited, by level (the only part of a line this package
// reads), and those suppressed are counted.
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

// logWriter turns memberlist's "[LEVEL] memberlist: ..." lines into slog,
// within the limiter's budget. Nothing else is read from a line: memberlist
// puts text it received from strangers (a label) into it.
type logWriter struct {
	l     *slog.Logger
	limit *logLimiter
}

func (w logWriter) Write(p []byte) (int, error) {
	msg := bytes.TrimSpace(p)
	level := slog.LevelInfo
	for _, l := range logLevels {
		if rest, ok := bytes.CutPrefix(msg, l.prefix); ok {
			msg, level = rest, l.level
			break
		}
	}
	ctx := context.Background()
	if !w.l.Enabled(ctx, level) {
		return len(p), nil
	}
	ok, before := w.limit.allow(level, time.Now())
	if !ok {
		return len(p), nil
	}
	if before > 0 {
		w.l.Log(ctx, max(level, slog.LevelWarn), "memberlist logged too much: lines suppressed", "level", level.String(), "suppressed", before)
	}
	w.l.Log(ctx, level, string(msg))
	return len(p), nil
}
