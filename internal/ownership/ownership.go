// Package ownership counts each VIP's known clients and who answers them,
// for status and metrics alike, and caches the counts so that a scrape or a
// status does not walk the whole client table.
package ownership

import (
	"iter"
	"net/netip"
	"sync"
	"time"

	"github.com/arpshare/arpshare/arp"
	"github.com/arpshare/arpshare/gossip"
	"github.com/arpshare/arpshare/internal/config"
)

// Counts counts one VIP's known clients and who answers them.
type Counts struct {
	Known int
	// Owned is how many this host answers (arpshare_clients_owned).
	Owned int
	// Owners is how many each host answers, in exclusive modes only (the
	// status's owners; race mode has no single owner).
	Owners map[string]int
}

// maxAge is how often, at most, a table that keeps changing (a
// flood of new senders, say) is counted again. A change of the view or the
// config is counted at the next read.
const maxAge = time.Second

// Cache keeps the client counts that status and metrics show, so that
// a scrape or a status costs O(VIPs + hosts), not a walk of the whole
// client table with a rendezvous hash per client: the table is walked
// again only when the view, the config or the table's counts changed, and
// for the table at most once per maxAge.
type Cache struct {
	mu    sync.Mutex
	sig   countsSig
	at    time.Time
	byVIP map[netip.Addr]Counts
}

// countsSig says what the counts were made from. A table whose counts are
// unchanged may still have changed (one client expired and another came);
// that shows at its next change of counts.
type countsSig struct {
	view  *gossip.View   // replaced, never changed, on every view change
	cfg   *config.Config // likewise on every reload
	table tableCounts
}

// tableCounts are the comparable counts of arp.TableStats.
type tableCounts struct {
	probation, protected int
	evicted              uint64
}

// Get returns the counts by VIP address; callers must not change them.
func (c *Cache) Get(cfg *config.Config, v *gossip.View, table *arp.ClientTable) map[netip.Addr]Counts {
	st := table.Stats()
	sig := countsSig{view: v, cfg: cfg, table: tableCounts{st.Probation, st.Protected, st.Evicted}}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byVIP != nil && (sig == c.sig || (sig.view == c.sig.view && sig.cfg == c.sig.cfg && time.Since(c.at) < maxAge)) {
		return c.byVIP
	}
	c.byVIP, c.sig, c.at = Count(cfg, v, table.All()), sig, time.Now()
	return c.byVIP
}

// Count walks the clients once, copying none (see arp.ClientTable.All):
// every VIP of cfg gets its counts, clients of a VIP a reload removed are
// left out.
func Count(cfg *config.Config, v *gossip.View, clients iter.Seq[arp.Entry]) map[netip.Addr]Counts {
	out := map[netip.Addr]Counts{}
	vips := map[netip.Addr]config.VIP{}
	for _, vip := range cfg.VIPs {
		vips[vip.Address] = vip
		out[vip.Address] = Counts{Owners: map[string]int{}}
	}
	for cl := range clients {
		vip, ok := vips[cl.VIP]
		if !ok {
			continue
		}
		p, n := vip.Policy(), out[cl.VIP]
		n.Known++
		if p.Answers(v, cl.VIP, cl.IP) {
			n.Owned++
		}
		if p.Exclusive() {
			if o := p.Owner(v, cl.VIP, cl.IP); o != "" {
				n.Owners[o]++
			}
		}
		out[cl.VIP] = n
	}
	return out
}
