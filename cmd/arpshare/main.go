// Command arpshare shares one virtual IP across the hosts of an L2 segment by
// answering ARP for each client from one host, chosen by consistent hashing.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/arpshare/arpshare/daemon"
)

// Set at build time: go build -ldflags "-X main.version=1.2.3 -X main.commit=abc123".
var (
	version = "dev"
	commit  = ""
)

const usage = `usage: arpshare <command> [flags]

commands:
  run      [--config FILE] [--log-level LEVEL]   run the daemon
  check    [--config FILE]                       validate the config
  keygen                                         print a new gossip key
  status   [--socket PATH] [--json]              show the running daemon's view
  clients  [--socket PATH] [--vip NAME] [--json] list known clients and who answers each
  owner    [--socket PATH] [--json] VIP CLIENT   which host answers CLIENT for VIP
  drain    [--socket PATH]                       hand this host's clients to the others
  resume   [--socket PATH]                       take this host's share back
  version                                        print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet("arpshare "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", daemon.DefaultConfigPath, "config file")
	socket := fs.String("socket", daemon.DefaultSocket, "daemon's API socket")
	asJSON := fs.Bool("json", false, "print JSON")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	vip := fs.String("vip", "", "only this VIP (name or address)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	wantArgs := 0
	if args[0] == "owner" {
		wantArgs = 2
	}
	if fs.NArg() != wantArgs {
		if wantArgs > 0 {
			fmt.Fprintf(stderr, "usage: arpshare owner [--socket PATH] [--json] VIP CLIENT\n")
		} else {
			fmt.Fprintf(stderr, "arpshare %s: unexpected argument %q\n", args[0], fs.Arg(0))
		}
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	print := func(v any, table func()) int {
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			enc.Encode(v)
		} else {
			table()
		}
		return 0
	}

	switch args[0] {
	case "run":
		return runDaemon(*config, *level, stderr)
	case "check":
		cfg, err := daemon.LoadConfig(*config)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		for _, w := range cfg.Warnings {
			fmt.Fprintf(stderr, "%s: warning: %s\n", *config, w)
		}
		fmt.Fprintf(stdout, "%s: ok\n", *config)
		return 0
	case "clients":
		cs, err := daemon.GetClients(ctx, *socket, *vip)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return print(cs, func() {
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "VIP\tCLIENT\tMAC\tLAST SEEN\tOWNER")
			for _, c := range cs {
				owner := c.Owner
				if owner == "" {
					owner = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%s\n", c.VIP, c.IP, c.MAC, time.Since(c.LastSeen).Round(time.Second), owner)
			}
			tw.Flush()
		})
	case "owner":
		o, err := daemon.GetOwner(ctx, *socket, fs.Arg(0), fs.Arg(1))
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return print(o, func() {
			owner := o.Owner
			switch {
			case owner == "":
				owner = "nobody (no eligible host)"
			case o.Mode == "race":
				owner = "every eligible host races to answer; " + owner + " re-points it on failover"
			}
			fmt.Fprintf(stdout, "%s for vip %s (%s, mode %s): %s\n", o.Client, o.VIP, o.Address, o.Mode, owner)
			fmt.Fprintf(stdout, "eligible hosts: %s\n", strings.Join(o.Eligible, " "))
			if o.Known {
				fmt.Fprintf(stdout, "this host knows the client at %s\n", o.MAC)
			} else {
				fmt.Fprintln(stdout, "this host has not seen this client ask for the VIP")
			}
			if !o.Quorum {
				fmt.Fprintln(stdout, "WARNING: this host has no quorum; its view may be wrong")
			}
		})
	case "drain", "resume":
		s, err := daemon.Drain(ctx, *socket, args[0] == "drain")
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		printStatus(stdout, s)
		return 0
	case "keygen":
		key := make([]byte, 32)
		rand.Read(key)
		fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(key))
		return 0
	case "status":
		s, err := daemon.GetStatus(ctx, *socket)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return print(s, func() { printStatus(stdout, s) })
	case "version":
		fmt.Fprintf(stdout, "arpshare %s (commit %s, %s %s/%s)\n", version, buildCommit(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "arpshare: unknown command %q\n%s", args[0], usage)
	return 2
}

func buildCommit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value[:min(12, len(s.Value))]
			}
		}
	}
	return "unknown"
}

func runDaemon(path, level string, stderr io.Writer) int {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		fmt.Fprintf(stderr, "arpshare run: --log-level %q: %v\n", level, err)
		return 2
	}
	// journald adds its own timestamps.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: l, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey && os.Getenv("JOURNAL_STREAM") != "" {
			return slog.Attr{}
		}
		return a
	}}))
	cfg, err := daemon.LoadConfig(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := daemon.New(cfg, log, version).Run(ctx, path); err != nil {
		log.Error("arpshare failed", "error", err)
		return 1
	}
	log.Info("arpshare stopped")
	return 0
}

func printStatus(w io.Writer, s daemon.Status) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	state := "serving"
	if s.Draining {
		state = "draining"
	}
	if !s.Quorum {
		state += ", NO QUORUM: answering nobody"
	}
	if s.Join != "" {
		state += ", " + s.Join
	}
	fmt.Fprintf(tw, "node %s (%s), arpshare %s\n", s.Node, state, s.Version)
	if s.JoinCause != "" {
		fmt.Fprintf(tw, "REJECTED, answering nobody: %s\n", s.JoinCause)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "MEMBER\tADDRESS\tSTATE\tWEIGHT\tNOTE")
	for _, m := range s.Members {
		note := ""
		switch {
		case m.Err != "":
			note = m.Err
		case m.Unreachable:
			note = "unreachable from here"
		case m.Meta.Draining:
			note = "draining"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", m.Name, m.Addr, m.State, m.Meta.Weight, note)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "VIP\tADDRESS\tINTERFACE\tMODE\tHERE\tCLIENTS\tCLIENTS PER HOST\tUNHEALTHY")
	for _, v := range s.VIPs {
		iface := v.Interface
		if !v.Answering {
			iface += " (down)"
		}
		here := "healthy"
		if !v.Healthy {
			here = "unhealthy"
		}
		var per []string
		for _, h := range v.Eligible {
			if v.Mode == "race" {
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
}

// repointLine says what re-pointing is doing, at which rate.
func repointLine(r daemon.RepointStatus) string {
	round := "idle"
	if r.Clients > 0 {
		round = fmt.Sprintf("%d clients, %d packets left, about %s at this rate", r.Clients, r.Packets, r.Remaining.Round(100*time.Millisecond))
	}
	return fmt.Sprintf("re-pointing at %d packets/s: %s (since start: %d clients answered, %d did not)\n", r.Rate, round, r.Confirmed, r.Unanswered)
}
