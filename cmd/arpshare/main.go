// Command arpshare shares one virtual IP across the hosts of an L2 segment by
// answering ARP and Neighbor Discovery for each client from one host, chosen
// by consistent hashing. Its commands live in internal/cli; main wires the
// daemon to them.
package main

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/arpshare/arpshare/daemon"
	"github.com/arpshare/arpshare/internal/cli"
	"github.com/arpshare/arpshare/internal/config"
	"github.com/arpshare/arpshare/internal/gcfloor"
)

// Set at build time by `make`: -X main.version=1.2.3 -X main.commit=abc123.
var (
	version = "dev"
	commit  = ""
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr, cli.Build{Version: version, Commit: buildCommit(), Run: run}))
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

// run runs the daemon: `arpshare run`.
func run(ctx context.Context, cfg *config.Config, log *slog.Logger, version, path string) error {
	defer gcfloor.Start(gcfloor.Growth)()
	return daemon.New(cfg, log, version).Run(ctx, path)
}
