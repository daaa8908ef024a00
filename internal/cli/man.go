package cli

import (
	"fmt"
	"regexp"
	"strings"
)

// The manual pages and the completion are made from the command
// declarations above (arpshare(8), the bash completion) and from
// docs/configuration.md (arpshare.toml(5)), so they say what --help and the
// docs say. `make packages` writes them with packaging/gen.

// StatusFields documents `arpshare status --json` (and drain, resume): every
// field of api.Status, MemberStatus and VIPStatus, by JSON name. A test
// checks that none is missing.
var StatusFields = []struct{ Name, Meaning string }{
	{"node", "this host's node.name"},
	{"version", "the daemon's version"},
	{"serving", "true when this host serves every VIP (status exits 0)"},
	{"not_serving", "why it does not, one reason each (status exits 5)"},
	{"draining", "this host is drained, or stopping"},
	{"drain", "while this host drains: done (every live peer that serves one of its VIPs reports that it has re-pointed the clients this host's view gives it; `arpshare drain` waits for it) and waiting (the peers that have not yet); absent otherwise"},
	{"quorum", "false while this host sees fewer than a majority of expect hosts: it then answers nobody"},
	{"expect", "gossip.expect, absent when not set"},
	{"join", "member (in the cluster, with live peers), alone (no peer answers at all) or rejected (peers answer but refuse this host: it answers nobody, and status exits 5)"},
	{"join_cause", "why the peers refuse this host (wrong key, wrong cluster label, its name taken) and what to do; absent unless rejected"},
	{"members", "the cluster members this host knows, each with:"},
	{"members[].name", "its node.name"},
	{"members[].address", "its gossip address, IP:port"},
	{"members[].state", "alive, dead, or rejected: alive, but its gossiped metadata is out of range or of another version (then error says why)"},
	{"members[].unreachable", "gossip lists it, but this host's own probes of it go unanswered"},
	{"members[].error", "why it is not trusted with clients nor counted toward quorum (a different metadata version or ownership algorithm, a weight, VIP or MAC out of range), absent when it is"},
	{"members[].weight", "its node.weight"},
	{"members[].draining", "it is drained or stopping"},
	{"members[].healthy_vips", "the VIP addresses it serves whose health check passes there"},
	{"members[].unhealthy_vips", "the VIP addresses it serves whose health check fails there"},
	{"members[].macs", "the MAC addresses of its serving interfaces"},
	{"members[].metadata_version", "the version of the gossip protocol (its metadata) it speaks"},
	{"members[].min_metadata_version", "the oldest gossip protocol version it also speaks; absent from builds before 0.1.0"},
	{"members[].software", "its release, as arpshare version prints it; absent from builds before 0.1.0"},
	{"members[].ownership_algorithm", "the version of the ownership function it runs"},
	{"vips", "the VIPs of this host's config, each with:"},
	{"vips[].name", "vip.name"},
	{"vips[].address", "vip.address"},
	{"vips[].interface", "vip.interface"},
	{"vips[].mode", "hash, race or single"},
	{"vips[].answering", "false while the interface is missing or down"},
	{"vips[].healthy", "this host's health check passes (true without a check)"},
	{"vips[].link", "why this host's link cannot serve the VIP (\"link eth0: no carrier\"), which makes it unhealthy for the others as a failed check does; left out while it can"},
	{"vips[].fallback", "no host passes the check, so every live host answers"},
	{"vips[].eligible", "the hosts that may answer its clients"},
	{"vips[].unhealthy", "the live hosts whose check fails"},
	{"vips[].clients", "how many of its clients this host knows"},
	{"vips[].owners", "known clients per eligible host"},
	{"vips[].frames", "ARP or NDP frames about it this host received, by outcome"},
	{"vips[].proposed_routers", "with node.propose_routers: the neighbours that forward new connections from several addresses to the VIP and are not in its vip.routers, each with addresses (those it asked for the VIP from: the ones to list in vip.routers; empty while not known), mac, sources (distinct source addresses seen, up to 4) and last_seen; never applied; left out when none"},
	{"vips[].kernel_frames", "of those frames, the ARP requests the kernel fast path (node.fast_path) decided on, by outcome; left out when none"},
	{"repointing", "the re-pointing round in progress: rate (node.repoint_rate, packets/s), clients and packets still to send, remaining (how long that takes at the rate, in nanoseconds), and since start the clients that answered their re-pointing request (confirmed) and those that did not (unanswered); reasserting and reassert_rate are the clients left in the periodic re-assertion round (node.reassert_interval) and its pace in packets/s (node.reassert_rate, or slower to spread the round over the interval)"},
	{"handover", "the connection handover (planned moves keep open TCP connections): active (the eBPF program is loaded), error (why not), interfaces (where it runs), unattached (interfaces it could not be put on, with why), clients (the moved clients whose unknown flows this host hands to their previous owner: vip, client, mac, previous, packets, left_ns of the grace period), packets (TCP segments from moved clients by outcome: handed, local, syn, expired, loop) and ended (handovers ended, by reason: grace, idle, previous_gone, unserved)"},
	{"router_proposals", "the watching for routers (node.propose_routers): enabled, interfaces (where it watches), unopened (interfaces it could not watch, with why) and segments (the first segments of new TCP connections to the VIPs it read, by outcome: counted, rate_limited (over 200 a second), table_full (256 neighbours held), from_cluster (a host's MAC: a spread flow), not_vip, bad_frame, dropped_kernel)"},
	{"spread", "the spreading of routed clients' flows (vip.routers): configured (a VIP has routers), active (the eBPF program is loaded), error (why not), interfaces, unattached, vips (each VIP's name, the hosts of its table, and its routers with the MAC learnt from their ARP requests, empty while not seen) and packets (to VIPs with routers, by outcome: spread, local, not_router, no_table, bad_packet, bad_mac, received, handed, loop)"},
}

// roff escapes text for a man page: backslashes, leading dots and quotes,
// and `code` as bold.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	s = regexp.MustCompile("`([^`]*)`").ReplaceAllString(s, `\fB$1\fR`)
	s = regexp.MustCompile(`\*\*([^*]+)\*\*`).ReplaceAllString(s, `\fB$1\fR`)
	s = regexp.MustCompile(`\[([^\]]+)\]\(([^)]+)\)`).ReplaceAllStringFunc(s, func(m string) string {
		parts := regexp.MustCompile(`\[([^\]]+)\]\(([^)]+)\)`).FindStringSubmatch(m)
		return parts[1]
	})
	var ascii strings.Builder
	for _, r := range s {
		if r > 127 {
			fmt.Fprintf(&ascii, `\[u%04X]`, r)
		} else {
			ascii.WriteRune(r)
		}
	}
	s = ascii.String()
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			l = `\&` + l
		}
		lines = append(lines, l)
	}
	return strings.Join(lines, "\n")
}

func header(b *strings.Builder, name, section, version, title string) {
	fmt.Fprintf(b, ".\\\" Generated by packaging/gen from internal/cli and docs/configuration.md; do not edit.\n")
	fmt.Fprintf(b, ".TH %s %s \"\" \"arpshare %s\" \"%s\"\n", strings.ToUpper(name), section, roff(version), title)
}

// ManPage8 is arpshare(8).
func ManPage8(version string) string {
	var b strings.Builder
	header(&b, "arpshare", "8", version, "System Manager's Manual")
	b.WriteString(".SH NAME\narpshare \\- share one virtual IP across the hosts of an L2 segment\n")
	b.WriteString(".SH SYNOPSIS\n")
	for _, c := range commands {
		fmt.Fprintf(&b, ".B %s\n.br\n", roff(c.synopsis()))
	}
	b.WriteString(".B arpshare \\-\\-version\n.br\n.B arpshare \\-\\-help\n")
	b.WriteString(".SH DESCRIPTION\n" + roff("arpshare is a daemon for bare-metal Linux clusters that lets every healthy host answer ARP (IPv4) and Neighbor Discovery (IPv6) for the same virtual IP, each for its own share of the clients, chosen by a rendezvous hash over the hosts that memberlist gossip says are alive. "+
		"When a host dies, fails its health check or is drained, its clients are re-pointed to the others (after a power loss, in about 0.65 s with 3 hosts: docs/benchmarks.md). "+
		"The daemon (`arpshare run`) is started by systemd; the other commands configure it and ask it questions over its API socket.") + "\n")
	b.WriteString(".SH COMMANDS\n")
	for _, c := range commands {
		fmt.Fprintf(&b, ".SS %s\n.B %s\n.PP\n%s\n", c.name, roff(c.synopsis()), roff(c.help))
		for _, f := range c.flags {
			name := "\\-\\-" + roff(f.name)
			if f.arg != "" {
				name += " \\fI" + f.arg + "\\fR"
			}
			usage := f.usage
			if f.def != "" {
				usage += " (default " + f.def + ")"
			}
			fmt.Fprintf(&b, ".TP\n.B %s\n%s\n", name, roff(usage))
		}
		for _, ex := range c.examples {
			fmt.Fprintf(&b, ".PP\nExample:\n.RS\n.EX\n%s\n.EE\n.RE\n", roff(ex))
		}
	}
	b.WriteString(".PP\n" + roff("Every flag may be written with one dash or two, before, between or after the arguments (`arpshare owner web 192.0.2.57 --json`); `--` ends the flags, and what follows it is arguments only. `-h` or `--help` shows a command's help.") + "\n")
	b.WriteString(".PP\n" + roff("Every command names a VIP the same way: by its vip.name or its address, as an argument (`arpshare clients web`, `arpshare owner 198.18.0.100 192.0.2.57`). `--vip VIP` gives the same argument as a flag, as older releases had it for `clients`. An unknown VIP is refused with the list of the VIPs that exist.") + "\n")
	b.WriteString(".SH EXIT STATUS\n")
	for _, x := range []struct {
		code int
		text string
	}{
		{ExitOK, "Success. For `status`: this host serves every VIP."},
		{ExitFailure, "The command failed: `check` found errors, or the daemon answered with an error."},
		{ExitUsage, "Bad command line."},
		{ExitNotRunning, "No daemon listens on the API socket: arpshare is not running (try: systemctl status arpshare)."},
		{ExitDenied, "Permission denied on the API socket: run as root, or join the arpshare-status group to read status (draining takes root)."},
		{ExitNotServing, "For `status`: the daemon runs but this host does not serve every VIP (no quorum, rejected by its peers, draining, an interface missing or down, a link that cannot serve, a health check failing); the output says why."},
	} {
		fmt.Fprintf(&b, ".TP\n.B %d\n%s\n", x.code, roff(x.text))
	}
	b.WriteString(".SH JSON OUTPUT\n" + roff("`--json` prints the same facts as the text output, as one JSON document. `status`, `drain` and `resume` print this object:") + "\n")
	for _, f := range StatusFields {
		fmt.Fprintf(&b, ".TP\n.B %s\n%s\n", roff(f.Name), roff(f.Meaning))
	}
	b.WriteString(".PP\n" + roff("`clients` prints a list of objects with `vip` (the VIP's name), `ip`, `mac`, `last_seen` (RFC 3339) and `owner` (empty in race mode). "+
		"`owner` prints `vip`, `address`, `mode`, `client`, `owner`, `eligible`, `known`, `mac` and `quorum`. "+
		"`check` prints `config`, `ok`, `errors` and `warnings`; `version` prints `version`, `commit`, `go_version` and `platform`; `keygen` prints `key` (with `--output`: `file` and `mode`).") + "\n")
	b.WriteString(".SH SIGNALS\n")
	for _, s := range [][2]string{
		{"SIGHUP", "Reload the config file (what `systemctl reload arpshare` sends, after `arpshare check` passes). VIPs, node.weight, gossip.peers and gossip.expect change live; other keys need a restart. A refused config is logged, counted in arpshare_config_reloads_total{result=\"refused\"} and leaves the running one in force."},
		{"SIGTERM, SIGINT", "Stop gracefully: drain, wait (up to 10 s) until the other hosts report that they have re-pointed this host's clients, wait up to handover.stop_wait (30 s) for the TCP connections to the VIPs here to end, leave the cluster, take the VIPs off lo. " +
			"The last eligible host of a VIP does not drain (it answers until it exits, and logs why); if other hosts stop at the same time, it first waits up to 10 s for one of them to be back, and drains to it. A stopping host answers again while no other host is eligible. So a restart of every host at once leaves no VIP unanswered."},
	} {
		fmt.Fprintf(&b, ".TP\n.B %s\n%s\n", s[0], roff(s[1]))
	}
	b.WriteString(".SH FILES\n")
	for _, f := range [][2]string{
		{"/etc/arpshare/arpshare.toml", "The config file; see arpshare.toml(5)."},
		{"/etc/arpshare/gossip.key", "The gossip key, made by `arpshare keygen -o /etc/arpshare/gossip.key --group arpshare`; mode 0640, group arpshare (`arpshare run` refuses a key others can read)."},
		{"/run/arpshare/arpshare.sock", "The API socket (mode 0660, group arpshare) that status, clients, owner, drain and resume use."},
		{"/var/lib/arpshare/drained", "Present while this host is drained."},
		{"/usr/lib/systemd/system/arpshare.service", "The systemd unit (/lib/systemd/system on Debian)."},
		{"/etc/needrestart/conf.d/arpshare.conf", "Tells needrestart not to restart arpshare after a package upgrade: upgrades reach every host at once, and a restart of every host at once leaves the cluster without quorum until most hosts are back. Restart one host at a time."},
		{"/usr/share/doc/arpshare/", "The operations guide (docs/operations.md), the configuration reference (docs/configuration.md) and a commented example config (examples/arpshare.toml)."},
	} {
		fmt.Fprintf(&b, ".TP\n.I %s\n%s\n", roff(f[0]), roff(f[1]))
	}
	b.WriteString(".SH ENVIRONMENT\n.TP\n.B NOTIFY_SOCKET, WATCHDOG_USEC\nSet by systemd: the daemon reports readiness, reloads and status, and pings the watchdog.\n" +
		".TP\n.B JOURNAL_STREAM\nSet by systemd when standard error goes to the journal: each log line then starts with its syslog priority, so \\fBjournalctl \\-u arpshare \\-p warning\\fR shows the warnings and errors.\n")
	b.WriteString(".SH SEE ALSO\n.BR arpshare.toml (5),\n.BR systemctl (1),\n.BR journalctl (1),\n.BR ip (8)\n.PP\n/usr/share/doc/arpshare/docs/operations.md, the operations guide\n")
	return b.String()
}

// ManPage5 is arpshare.toml(5), made from docs/configuration.md.
func ManPage5(version string, configurationMD string) string {
	var b strings.Builder
	header(&b, "arpshare.toml", "5", version, "File Formats Manual")
	b.WriteString(".SH NAME\narpshare.toml \\- configuration file of arpshare(8)\n.SH SYNOPSIS\n/etc/arpshare/arpshare.toml\n.SH DESCRIPTION\n")
	lines := strings.Split(configurationMD, "\n")
	var para []string
	flush := func() {
		if len(para) > 0 {
			fmt.Fprintf(&b, ".PP\n%s\n", roff(strings.Join(para, " ")))
			para = nil
		}
	}
	for _, l := range lines[1:] { // the first line is the page's title
		t := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(t, "## "):
			flush()
			fmt.Fprintf(&b, ".SH %s\n", roff(strings.ToUpper(strings.TrimPrefix(t, "## "))))
		case strings.HasPrefix(t, "|---"), strings.HasPrefix(t, "| key |"):
		case strings.HasPrefix(t, "| `"):
			flush()
			cells := strings.Split(strings.Trim(t, "|"), " | ")
			for i := range cells {
				cells[i] = strings.TrimSpace(cells[i])
			}
			if len(cells) == 4 {
				fmt.Fprintf(&b, ".TP\n%s\n%s; default: %s.\n%s\n", roff(cells[0]), roff(cells[1]), roff(cells[2]), roff(cells[3]))
			}
		case strings.HasPrefix(t, "- "):
			flush()
			para = append(para, strings.TrimPrefix(t, "- "))
			fmt.Fprintf(&b, ".IP \\(bu 2\n%s\n", roff(strings.Join(para, " ")))
			para = nil
		case t == "":
			flush()
		default:
			if strings.HasPrefix(l, "  ") && len(para) == 0 {
				// A list item's continuation line: append to the last item.
				fmt.Fprintf(&b, "%s\n", roff(t))
				continue
			}
			para = append(para, t)
		}
	}
	flush()
	b.WriteString(".SH SEE ALSO\n.BR arpshare (8)\n.PP\n/usr/share/doc/arpshare/examples/arpshare.toml, a commented example of every key;\n/usr/share/doc/arpshare/docs/configuration.md, from which this page is made.\n")
	return b.String()
}

// BashCompletion completes arpshare's commands, their flags, and file
// names for --config and --socket.
func BashCompletion() string {
	var b strings.Builder
	b.WriteString("# bash completion for arpshare(8); generated by packaging/gen from internal/cli.\n")
	b.WriteString("_arpshare() {\n\tlocal cur prev cmd\n\tcur=\"${COMP_WORDS[COMP_CWORD]}\"\n\tprev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n")
	b.WriteString("\tif [ \"$COMP_CWORD\" -eq 1 ]; then\n")
	fmt.Fprintf(&b, "\t\tCOMPREPLY=($(compgen -W %q -- \"$cur\"))\n\t\treturn\n\tfi\n", strings.Join(append(commandNames(), "--help", "--version"), " "))
	b.WriteString("\tcase \"$prev\" in\n\t--config|-config|--socket|-socket)\n\t\tCOMPREPLY=($(compgen -f -- \"$cur\"))\n\t\treturn\n\t\t;;\n")
	b.WriteString("\t--log-level|-log-level)\n\t\tCOMPREPLY=($(compgen -W \"debug info warn error\" -- \"$cur\"))\n\t\treturn\n\t\t;;\n\tesac\n")
	b.WriteString("\tcmd=\"${COMP_WORDS[1]}\"\n\tcase \"$cmd\" in\n")
	for _, c := range commands {
		var words []string
		for _, f := range c.flags {
			words = append(words, "--"+f.name)
		}
		if c.name == "help" {
			words = commandNames()
		}
		words = append(words, "--help")
		fmt.Fprintf(&b, "\t%s)\n\t\tCOMPREPLY=($(compgen -W %q -- \"$cur\"))\n\t\t;;\n", c.name, strings.Join(words, " "))
	}
	b.WriteString("\tesac\n}\ncomplete -F _arpshare arpshare\n")
	return b.String()
}
