package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/arpshare/arpshare/internal/config"
)

// newLogger logs text lines to w at level and above. When w is the journal
// stream systemd gave the service (journalStream is $JOURNAL_STREAM, and
// matches w's device and inode), each line starts with its syslog priority
// ("<3>" for an error), which journald strips and keeps as the entry's
// PRIORITY, so `journalctl -p warning` works; the timestamp is left to
// journald.
func newLogger(level string, w io.Writer, journalStream string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	journal := isJournal(w, journalStream)
	pw := &priorityWriter{w: w}
	opts := &slog.HandlerOptions{Level: l, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if journal && len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}
	if !journal {
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return slog.New(&priorityHandler{inner: slog.NewTextHandler(pw, opts), w: pw}), nil
}

// isJournal reports whether w is the stream $JOURNAL_STREAM names
// ("device:inode"), as sd-daemon(3) says to check.
func isJournal(w io.Writer, journalStream string) bool {
	f, ok := w.(*os.File)
	if !ok || journalStream == "" {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return journalStream == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// Syslog priorities, as sd-daemon(3) prefixes them.
func priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3 // LOG_ERR
	case l >= slog.LevelWarn:
		return 4 // LOG_WARNING
	case l >= slog.LevelInfo:
		return 6 // LOG_INFO
	}
	return 7 // LOG_DEBUG
}

// priorityWriter prefixes the next write with a priority; the handler sets
// it under the lock, and slog's text handler writes each record at once.
type priorityWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix []byte
}

func (p *priorityWriter) Write(b []byte) (int, error) {
	if _, err := p.w.Write(append(p.prefix, b...)); err != nil {
		return 0, err
	}
	return len(b), nil
}

type priorityHandler struct {
	inner slog.Handler
	w     *priorityWriter
}

func (h *priorityHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *priorityHandler) Handle(ctx context.Context, r slog.Record) error {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	h.w.prefix = fmt.Appendf(h.w.prefix[:0], "<%d>", priority(r.Level))
	return h.inner.Handle(ctx, r)
}

func (h *priorityHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &priorityHandler{inner: h.inner.WithAttrs(as), w: h.w}
}

func (h *priorityHandler) WithGroup(name string) slog.Handler {
	return &priorityHandler{inner: h.inner.WithGroup(name), w: h.w}
}

// serve runs the daemon until SIGTERM or SIGINT.
func serve(e *env, log *slog.Logger) int {
	cfg, err := config.LoadConfig(e.opts.config)
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			log.Error("config refused", "error", line)
		}
		return ExitFailure
	}
	if cfg.Gossip.KeyFile != "" {
		if err := config.KeyFilePrivate(cfg.Gossip.KeyFile); err != nil {
			log.Error("gossip key refused", "error", err.Error())
			return ExitFailure
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := e.build.Run(ctx, cfg, log, e.build.Version, e.opts.config); err != nil {
		log.Error("arpshare failed", "error", err)
		return ExitFailure
	}
	log.Info("arpshare stopped")
	return ExitOK
}
