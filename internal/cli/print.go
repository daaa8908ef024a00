package cli

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/arpshare/arpshare/arp/policy"
	"github.com/arpshare/arpshare/internal/api"
	"github.com/arpshare/arpshare/internal/bpf/spread"
	"github.com/arpshare/arpshare/internal/propose"
)

func printClients(w io.Writer, cs []api.ClientStatus) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw, "VIP\tCLIENT\tMAC\tLAST SEEN\tOWNER")
	for _, c := range cs {
		owner := c.Owner
		if owner == "" {
			owner = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%s\n", c.VIP, c.IP, c.MAC, time.Since(c.LastSeen).Round(time.Second), owner)
	}
}

func printOwner(w io.Writer, o api.OwnerStatus) {
	owner := o.Owner
	switch {
	case owner == "":
		owner = "nobody (no eligible host)"
	case !policy.Of(o.Mode).Exclusive():
		owner = "every eligible host races to answer; " + owner + " re-points it on failover"
	}
	fmt.Fprintf(w, "%s for vip %s (%s, mode %s): %s\n", o.Client, o.VIP, o.Address, o.Mode, owner)
	fmt.Fprintf(w, "eligible hosts: %s\n", strings.Join(o.Eligible, " "))
	if o.Known {
		fmt.Fprintf(w, "this host knows the client at %s\n", o.MAC)
	} else {
		fmt.Fprintln(w, "this host has not seen this client ask for the VIP")
	}
	if !o.Quorum {
		fmt.Fprintln(w, "WARNING: this host has no quorum; its view may be wrong")
	}
}

func printStatus(w io.Writer, s api.Status) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	state := "serving"
	if !s.Serving {
		state = "NOT SERVING: " + strings.Join(s.NotServing, "; ")
	}
	if s.Join != "" {
		state += ", " + s.Join
	}
	fmt.Fprintf(tw, "node %s (%s), arpshare %s\n", s.Node, state, s.Version)
	if s.JoinCause != "" {
		fmt.Fprintf(tw, "REJECTED, answering nobody: %s\n", s.JoinCause)
	}
	switch {
	case s.Drain == nil:
	case s.Drain.Done:
		fmt.Fprintln(tw, "drained: the other hosts have re-pointed this host's clients")
	default:
		fmt.Fprintf(tw, "draining: waiting for %s to re-point this host's clients\n", strings.Join(s.Drain.Waiting, ", "))
	}
	fmt.Fprintln(tw)
	printMembers(tw, s.Members)
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "VIP\tADDRESS\tINTERFACE\tMODE\tHERE\tCLIENTS\tCLIENTS PER HOST\tUNHEALTHY")
	for _, v := range s.VIPs {
		iface := v.Interface
		if !v.Answering {
			iface += " (down)"
		}
		here := "healthy"
		switch {
		case v.Link != "":
			here = "link fault" // the first line says which
		case !v.Healthy:
			here = "unhealthy"
		}
		var per []string
		for _, h := range v.Eligible {
			if !policy.Of(v.Mode).Exclusive() {
				per = append(per, h)
			} else {
				per = append(per, fmt.Sprintf("%s=%d", h, v.Owners[h]))
			}
		}
		slices.Sort(per)
		switch {
		case len(per) == 0:
			per = []string{"no eligible host"}
		case v.Fallback:
			per = append(per, "(no host healthy: all answer)")
		}
		sick := strings.Join(v.Unhealthy, " ")
		if sick == "" {
			sick = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", v.Name, v.Address, iface, v.Mode, here, v.Clients, strings.Join(per, " "), sick)
	}
	fmt.Fprintln(tw)
	fmt.Fprint(tw, repointLine(s.Repointing))
	fmt.Fprintln(tw, "handover: "+s.Handover.Summary())
	fmt.Fprint(tw, spreadLine(s.Spread))
	fmt.Fprint(tw, proposalLines(s))
}

// printMembers writes the members table, one row a member.
func printMembers(tw io.Writer, members []api.MemberStatus) {
	fmt.Fprintln(tw, "MEMBER\tADDRESS\tSTATE\tWEIGHT\tVERSION\tPROTOCOL\tNOTE")
	for _, m := range members {
		note := ""
		switch {
		case m.Error != "":
			note = m.Error
		case m.Unreachable:
			note = "unreachable from here"
		case m.Draining:
			note = "draining"
		}
		sw, proto := m.Software, strconv.Itoa(m.MetadataVersion)
		if sw == "" {
			sw = "-" // a build from before it was gossiped
		}
		if m.MinMetadataVersion != 0 && m.MinMetadataVersion < m.MetadataVersion {
			proto = fmt.Sprintf("%d-%d", m.MinMetadataVersion, m.MetadataVersion)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", m.Name, m.Address, m.State, m.Weight, sw, proto, note)
	}
}

// proposalLines lists the proposed routers of each VIP, with
// node.propose_routers.
func proposalLines(s api.Status) string {
	p := s.Proposals
	if !p.Enabled {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "router proposals: watching %s", strings.Join(p.Interfaces, ", "))
	if len(p.Interfaces) == 0 {
		b.WriteString("no interface")
	}
	for iface, why := range p.Unopened {
		fmt.Fprintf(&b, "; not %s: %s", iface, why)
	}
	fmt.Fprintf(&b, " (%d new connections counted)\n", p.Segments[propose.Counted])
	for _, v := range s.VIPs {
		for _, r := range v.ProposedRouters {
			addrs := "address not known yet"
			if len(r.Addresses) > 0 {
				var as []string
				for _, a := range r.Addresses {
					as = append(as, strconv.Quote(a.String()))
				}
				addrs = "routers = [" + strings.Join(as, ", ") + "]"
			}
			fmt.Fprintf(&b, "  %s: proposed router %s: %s (connections from %d+ addresses, last %s; not applied)\n",
				v.Name, r.MAC, addrs, r.Sources, r.LastSeen.Format(time.RFC3339))
		}
	}
	return b.String()
}

// spreadLine says how routed clients are spread, if any VIP has routers.
func spreadLine(s spread.Status) string {
	if !s.Configured {
		return ""
	}
	return "spread: " + s.Summary() + "\n"
}

// repointLine says what re-pointing is doing, at which rate.
func repointLine(r api.RepointStatus) string {
	round := "idle"
	if r.Clients > 0 {
		round = fmt.Sprintf("%d clients, %d packets left, about %s at this rate", r.Clients, r.Packets, r.Remaining.Round(100*time.Millisecond))
	}
	return fmt.Sprintf("re-pointing at %d packets/s: %s (since start: %d clients answered, %d did not)\n", r.Rate, round, r.Confirmed, r.Unanswered)
}
