package cli

import (
	"testing"
	"time"

	"github.com/arpshare/arpshare/internal/api"
)

// TestRepointLine: `arpshare status` says how long the round takes.
func TestRepointLine(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   api.RepointStatus
		want string
	}{
		{api.RepointStatus{Rate: 5000}, "re-pointing at 5000 packets/s: idle (since start: 0 clients answered, 0 did not)\n"},
		{api.RepointStatus{Rate: 10, Clients: 40, Packets: 113, Remaining: 11300 * time.Millisecond, Confirmed: 3, Unanswered: 1},
			"re-pointing at 10 packets/s: 40 clients, 113 packets left, about 11.3s at this rate (since start: 3 clients answered, 1 did not)\n"},
	} {
		if got := repointLine(tt.in); got != tt.want {
			t.Errorf("repointLine(%+v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
