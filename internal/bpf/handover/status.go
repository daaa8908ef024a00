package handover

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Status is the handover as `arpshare status` shows it.
type Status struct {
	// Active: the kernel program is loaded; Error says why not.
	Active bool   `json:"active"`
	Error  string `json:"error,omitempty"`
	// Interfaces the program runs on; Unattached, those it could not
	// be put on, with why.
	Interfaces []string          `json:"interfaces,omitempty"`
	Unattached map[string]string `json:"unattached,omitempty"`
	// Clients being handed over now, and to whom.
	Clients []ClientStatus `json:"clients"`
	// Packets counts TCP segments from moved clients, by outcome.
	Packets map[string]uint64 `json:"packets,omitempty"`
	// Ended counts the ended handovers, by reason.
	Ended map[string]uint64 `json:"ended,omitempty"`
}

// ClientStatus is one moved client.
type ClientStatus struct {
	VIP      netip.Addr    `json:"vip"`
	Client   netip.Addr    `json:"client"`
	MAC      string        `json:"mac"`
	Previous string        `json:"previous"`
	Packets  uint64        `json:"packets"`
	Left     time.Duration `json:"left_ns"` // of the grace period
}

// Status reports the handover's state.
func (h *Handover) Status() Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := Status{Active: h.kmap != nil, Clients: []ClientStatus{}, Ended: map[string]uint64{}}
	switch {
	case !h.cfg.Enabled:
		s.Error = "disabled by handover.enabled = false"
	case h.loadErr != nil:
		s.Error = h.loadErr.Error()
	}
	for name := range h.ifaces {
		s.Interfaces = append(s.Interfaces, name)
	}
	slices.Sort(s.Interfaces)
	for name, err := range h.attachErr {
		if s.Unattached == nil {
			s.Unattached = map[string]string{}
		}
		s.Unattached[name] = err.Error()
	}
	now := h.now()
	for k, m := range h.moved {
		s.Clients = append(s.Clients, ClientStatus{VIP: k.VIP, Client: m.client, MAC: net.HardwareAddr(k.MAC[:]).String(),
			Previous: m.prev, Packets: m.packets, Left: m.entry.Deadline - now})
	}
	slices.SortFunc(s.Clients, func(a, b ClientStatus) int {
		if c := a.VIP.Compare(b.VIP); c != 0 {
			return c
		}
		return a.Client.Compare(b.Client)
	})
	for r, n := range h.ended {
		s.Ended[r] = n
	}
	if h.prog != nil {
		if o, err := h.prog.Outcomes(); err == nil {
			s.Packets = o
		}
	}
	return s
}

// Metric names.
const (
	MetricActive  = "arpshare_handover_active"
	MetricClients = "arpshare_handover_clients"
	MetricPackets = "arpshare_handover_packets_total"
	MetricEnded   = "arpshare_handover_ended_total"
)

var (
	descActive = prometheus.NewDesc(MetricActive,
		"1 if the connection handover program is loaded, 0 if planned moves reset open connections.", nil, nil)
	descClients = prometheus.NewDesc(MetricClients,
		"Moved clients whose unknown TCP flows this host hands to their previous owner.", nil, nil)
	descPackets = prometheus.NewDesc(MetricPackets,
		"TCP segments from moved clients, by outcome: handed (to the previous owner), local (a socket here), syn (a new connection, kept), expired, loop (from the previous owner, or TTL spent: not handed back), bad_mac (the entry names a group or zero MAC: not handed).", []string{"outcome"}, nil)
	descEnded = prometheus.NewDesc(MetricEnded,
		"Handovers ended, by reason: grace (period over), idle (nothing handed over lately), previous_gone (its previous owner left), unserved (the VIP is no longer served here).", []string{"reason"}, nil)
)

// Collector exports the handover's metrics.
func (h *Handover) Collector() prometheus.Collector { return collector{h} }

type collector struct{ h *Handover }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descActive
	ch <- descClients
	ch <- descPackets
	ch <- descEnded
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.h.Status()
	active := 0.0
	if s.Active {
		active = 1
	}
	ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, active)
	ch <- prometheus.MustNewConstMetric(descClients, prometheus.GaugeValue, float64(len(s.Clients)))
	for _, o := range outcomeNames {
		ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(s.Packets[o]), o)
	}
	for _, r := range []string{"grace", "idle", "previous_gone", "unserved"} {
		ch <- prometheus.MustNewConstMetric(descEnded, prometheus.CounterValue, float64(s.Ended[r]), r)
	}
}

// Connections counts the TCP connections to the given VIPs on this host,
// from either family: those a graceful stop waits for.
func Connections(vips []netip.Addr) (int, error) {
	n := 0
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := netlink.SocketDiagTCP(family)
		if err != nil {
			return 0, fmt.Errorf("list TCP sockets: %w", err)
		}
		for _, s := range socks {
			switch s.State {
			case unix.BPF_TCP_LISTEN, unix.BPF_TCP_TIME_WAIT, unix.BPF_TCP_CLOSE:
				continue
			}
			local, ok := netip.AddrFromSlice(s.ID.Source)
			if ok && slices.Contains(vips, local.Unmap()) {
				n++
			}
		}
	}
	return n, nil
}

// WaitConnections waits, up to limit, until no TCP connection to the VIPs is
// left on this host; it logs how many it leaves open.
func (h *Handover) WaitConnections(ctx context.Context, vips []netip.Addr, limit time.Duration) {
	deadline := time.Now().Add(limit)
	logged := false
	for {
		n, err := Connections(vips)
		if err != nil {
			h.log.Warn("stopping: cannot count open connections, not waiting for them", "error", err)
			return
		}
		if n == 0 || time.Now().After(deadline) {
			if n > 0 {
				h.log.Warn("stopping with connections still open: handover.stop_wait is over", "connections", n, "stop_wait", limit)
			}
			return
		}
		if !logged {
			h.log.Info("stopping: waiting for open connections to end", "connections", n, "up_to", limit)
			logged = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Summary is the status in one line, for `arpshare status`.
func (s Status) Summary() string {
	if !s.Active {
		why := s.Error
		if why == "" {
			why = "not loaded"
		}
		return "OFF, moves reset open connections: " + why
	}
	var b strings.Builder
	b.WriteString("on")
	if len(s.Interfaces) == 0 {
		b.WriteString(" no interface yet")
	}
	for _, name := range s.Interfaces {
		b.WriteString(" " + name)
	}
	for name, err := range s.Unattached {
		fmt.Fprintf(&b, ", OFF on %s (%s)", name, err)
	}
	by := map[string]int{}
	for _, c := range s.Clients {
		by[c.Previous]++
	}
	fmt.Fprintf(&b, ", %d moved clients", len(s.Clients))
	if len(by) > 0 {
		var per []string
		for _, p := range slices.Sorted(maps.Keys(by)) {
			per = append(per, fmt.Sprintf("%s=%d", p, by[p]))
		}
		fmt.Fprintf(&b, " (to %s)", strings.Join(per, " "))
	}
	fmt.Fprintf(&b, ", %d segments handed over", s.Packets["handed"])
	return b.String()
}
