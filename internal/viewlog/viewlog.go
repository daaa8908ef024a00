// Package viewlog logs what an operator must hear of as the cluster's view
// changes: quorum lost or regained, VIPs that no host passes the check of,
// members whose metadata is rejected and trusted again, and the members.
package viewlog

import (
	"log/slog"
	"net/netip"
	"strings"

	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/config"
)

// Watch logs what an operator must hear of in a new view: quorum lost or
// regained, VIPs that no host passes the check of, untrusted members. One
// goroutine calls it, view after view.
type Watch struct {
	quorum   bool
	fallback map[netip.Addr]bool
	rejected map[string]string // why each member's metadata is rejected
}

// New returns a Watch that starts from a view with quorum and no fallback.
func New() *Watch { return &Watch{quorum: true, fallback: map[netip.Addr]bool{}} }

// Observe logs what changed in v since the last view.
func (w *Watch) Observe(log *slog.Logger, v *gossip.View, vips []config.VIP) {
	switch {
	case w.quorum != v.Quorum() && !v.Quorum():
		log.Error("lost quorum: this host sees fewer than a majority of the expected hosts and stops answering", "alive", v.Alive(), "expect", v.Expect)
	case w.quorum != v.Quorum():
		log.Info("quorum regained: answering again", "alive", v.Alive(), "expect", v.Expect)
	}
	w.quorum = v.Quorum()
	var fallbackNow, fallbackOver []string
	for _, vip := range vips {
		if fb := v.Fallback(vip.Address); fb != w.fallback[vip.Address] {
			w.fallback[vip.Address] = fb
			if fb {
				fallbackNow = append(fallbackNow, vip.Name)
			} else {
				fallbackOver = append(fallbackOver, vip.Name)
			}
		}
	}
	if len(fallbackNow) > 0 {
		log.Error("no host passes the health check: every live host answers anyway", "vips", fallbackNow)
	}
	if len(fallbackOver) > 0 {
		log.Info("a host passes the health check again", "vips", fallbackOver)
	}
	var hosts []string
	for _, m := range v.Members {
		hosts = append(hosts, m.Name+"="+string(m.State))
	}
	w.observeRejected(log, v)
	log.Info("cluster view changed", "members", strings.Join(hosts, " "))
}

// observeRejected logs each member whose metadata is rejected once per
// cause, and when it is trusted again: a peer can change views as often as
// it likes.
func (w *Watch) observeRejected(log *slog.Logger, v *gossip.View) {
	if w.rejected == nil {
		w.rejected = map[string]string{}
	}
	now := map[string]string{}
	for _, m := range v.Members {
		if m.Err == "" {
			continue
		}
		now[m.Name] = m.Err
		if w.rejected[m.Name] != m.Err {
			log.Error("member rejected: its gossiped metadata is not trusted; it gets no clients and does not count toward quorum",
				"member", m.Name, "address", m.Addr, "reason", m.Reason, "error", m.Err)
		}
	}
	for name := range w.rejected {
		if _, still := now[name]; !still {
			if m, ok := v.Member(name); ok && m.State == gossip.StateAlive {
				log.Info("member trusted again: its metadata is in range", "member", name)
			}
		}
	}
	w.rejected = now
}
