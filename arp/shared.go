package arp

import (
	"log/slog"
	"time"
)

// SharedTable lets memberlist's push-pull carry the client table, so that a
// host that starts (or heals from a partition) knows the clients it must take.
type SharedTable struct {
	t   *ClientTable
	log *slog.Logger
}

// NewSharedTable shares t through memberlist's push-pull, logging what a
// peer sent that could not be taken.
func NewSharedTable(t *ClientTable, log *slog.Logger) SharedTable {
	return SharedTable{t: t, log: log}
}

// maxChanges bounds the client-table changes one periodic exchange
// carries: a host takes part in about two exchanges every 30 s, so at most
// about 35 KB/s (BenchmarkTableExchange),
// whatever happens to the table (100,000 clients re-asking at once would be
// 1.7 MB an exchange). Changes that do not fit go in the next
// exchanges. A joining host gets the whole table regardless.
const maxChanges = 512 << 10

func (s SharedTable) LocalState(since time.Time) []byte {
	if since.IsZero() {
		return s.t.Encode(time.Now(), since)
	}
	return s.t.EncodeAtMost(time.Now(), since, maxChanges)
}

func (s SharedTable) MergeState(b []byte, join bool) {
	// What was new is not listed: nobody here needs the list.
	if _, err := s.t.merge(b, time.Now(), !join, false); err != nil {
		s.log.Warn("client table from a peer dropped", "error", err)
	}
}
