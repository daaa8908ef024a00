package cli

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/arpshare/arpshare/internal/api"
	"github.com/arpshare/arpshare/internal/config"
)

// Exit codes, the same for every command; arpshare(8) lists them.
const (
	ExitOK         = 0 // success; for status: this host serves every VIP
	ExitFailure    = 1 // the command failed: a refused config, an error from the daemon
	ExitUsage      = 2 // bad command line
	ExitNotRunning = 3 // no daemon listens on the API socket
	ExitDenied     = 4 // the API socket exists but this user may not use it
	ExitNotServing = 5 // status: the daemon runs, but this host does not serve (all) its VIPs
)

// Build says which build runs; the linker stamps it (see the Makefile).
type Build struct {
	Version string
	Commit  string
	// Run runs the daemon with a checked config until ctx ends; cmd wires
	// it, so that the commands do not depend on the daemon.
	Run func(ctx context.Context, cfg *config.Config, log *slog.Logger, version, path string) error
}

// options are every flag of every command; each command declares the ones
// it takes.
type options struct {
	config   string
	socket   string
	json     bool
	logLevel string
	vip      string
	offline  bool
	output   string
	group    string
	force    bool
	timeout  string
}

// env is what a command runs with.
type env struct {
	opts   options
	fs     *flag.FlagSet
	args   []string
	build  Build
	stdout io.Writer
	stderr io.Writer
	// callTimeout, if longer than the usual 30 s, bounds a call to the
	// daemon.
	callTimeout time.Duration
}

// flagDef declares one flag; the same declarations make --help, the man
// page and the shell completion.
type flagDef struct {
	name, arg, usage string
	def              string // shown default, empty for none
	bind             func(fs *flag.FlagSet, o *options, name, usage string)
}

func stringFlag(name, arg, def, usage string, field func(*options) *string) flagDef {
	return flagDef{name: name, arg: arg, usage: usage, def: def, bind: func(fs *flag.FlagSet, o *options, name, usage string) {
		fs.StringVar(field(o), name, def, usage)
	}}
}

func boolFlag(name, usage string, field func(*options) *bool) flagDef {
	return flagDef{name: name, usage: usage, bind: func(fs *flag.FlagSet, o *options, name, usage string) {
		fs.BoolVar(field(o), name, false, usage)
	}}
}

var (
	flagConfig = stringFlag("config", "FILE", config.DefaultConfigPath, "the config file",
		func(o *options) *string { return &o.config })
	flagSocket = stringFlag("socket", "PATH", "", "the daemon's API socket (default: api.socket from the config file, else "+config.DefaultSocket+")",
		func(o *options) *string { return &o.socket })
	flagJSON     = boolFlag("json", "print JSON instead of text (fields are documented in arpshare(8))", func(o *options) *bool { return &o.json })
	flagLogLevel = stringFlag("log-level", "LEVEL", "info", "the lowest level logged: debug, info, warn or error",
		func(o *options) *string { return &o.logLevel })
	flagVIP    = stringFlag("vip", "VIP", "", "the VIP argument written as a flag (its name or address), for scripts written for older releases", func(o *options) *string { return &o.vip })
	flagOutput = flagDef{name: "output", arg: "FILE", usage: "write the key to FILE, created mode 0600 (0640 with --group), instead of printing it; -o for short",
		bind: func(fs *flag.FlagSet, o *options, name, usage string) {
			fs.StringVar(&o.output, name, "", usage)
			fs.StringVar(&o.output, "o", "", usage)
		}}
	flagGroup = stringFlag("group", "GROUP", "", "with --output: give FILE to GROUP, which may read it (mode 0640): the daemon's group, arpshare as packaged",
		func(o *options) *string { return &o.group })
	flagReplace = boolFlag("force", "with --output: replace FILE if it exists", func(o *options) *bool { return &o.force })
	flagOffline = boolFlag("offline", "only check the file, not this host (for configs rendered for other hosts)", func(o *options) *bool { return &o.offline })
	flagForce   = boolFlag("force", "drain even if this host is the last eligible host of a VIP, which then goes unanswered (a planned shutdown of the whole cluster)", func(o *options) *bool { return &o.force })
	flagTimeout = stringFlag("timeout", "DURATION", defaultDrainTimeout.String(), "give up (exit 1, the host stays drained) if the other hosts have not taken this host's clients by then",
		func(o *options) *string { return &o.timeout })
)

// defaultDrainTimeout is how long `arpshare drain` waits for the other hosts
// to take this host's clients: each sends every client 3 packets at
// node.repoint_rate, so 60,000 clients at the default rate (5,000/s) take
// under 40 s even on one host, and 1,000 clients at a DAI-safe 15/s take
// 200 s.
const defaultDrainTimeout = 5 * time.Minute

// command is one subcommand of arpshare.
type command struct {
	name string
	args []string // positional arguments, by name
	// vipArg: the first argument is a VIP, by name or address, which
	// --vip may give instead.
	vipArg   bool
	summary  string // one line, for the command list
	help     string // what it does, in full
	examples []string
	flags    []flagDef
	run      func(e *env) int
}

func (c *command) synopsis() string {
	s := "arpshare " + c.name
	for _, f := range c.flags {
		if f.arg != "" {
			s += fmt.Sprintf(" [--%s %s]", f.name, f.arg)
		} else {
			s += fmt.Sprintf(" [--%s]", f.name)
		}
	}
	for _, a := range c.args {
		s += " " + a
	}
	return s
}

// commands, in the order help lists them.
var commands []*command

func init() {
	commands = []*command{
		{
			name: "run", summary: "run the daemon (systemd starts it so)",
			help: "Runs the daemon in the foreground: joins the cluster, puts the VIPs on lo, answers ARP and Neighbor Discovery for this host's share of the clients, and serves the API socket and the metrics. " +
				"SIGHUP reloads the config; SIGTERM and SIGINT drain this host (unless it is the last eligible host of a VIP), leave the cluster and exit. Under systemd it speaks the notify protocol (READY, RELOADING, STOPPING, STATUS, WATCHDOG) and prefixes each log line with its syslog priority.",
			examples: []string{"arpshare run --config /etc/arpshare/arpshare.toml --log-level debug"},
			flags:    []flagDef{flagConfig, flagLogLevel},
			run:      runDaemon,
		},
		{
			name: "check", summary: "check the config file, and this host against it",
			help: "Checks the config file as the daemon would load it: every error is listed with its file and line, and warnings are printed without failing. " +
				"Then, unless --offline, checks this host: that each VIP's interface exists (a missing one fails the check, naming the interfaces this host has, unless the VIP sets wait_for_interface = true: then it is a warning and the daemon waits for it), that gossip.bind is an address of this host and its port is free or held by this host's own running daemon (naming the likely owner if not), that the gossip key file is not readable or writable by other users, and that no other user can change an exec health check's program. " +
				"The unit runs it before every start and reload.",
			examples: []string{"arpshare check", "arpshare check --offline --config rendered/web-1.toml"},
			flags:    []flagDef{flagConfig, flagOffline, flagJSON},
			run:      runCheck,
		},
		{
			name: "keygen", summary: "make a new gossip key",
			help: "Makes a new random 32-byte key (AES-256) in base64, the form gossip.key_file holds, and prints it, or with --output writes it to a new file that is never readable by others, not even for a moment: mode 0600, or 0640 and the group given with --group. " +
				"It refuses to replace an existing file without --force. Every host of a cluster needs the same key.",
			examples: []string{"arpshare keygen -o /etc/arpshare/gossip.key --group arpshare", "arpshare keygen >> /etc/arpshare/gossip.key"},
			flags:    []flagDef{flagOutput, flagGroup, flagReplace, flagJSON},
			run:      runKeygen,
		},
		{
			name: "status", summary: "show this host's view of the cluster; exit 5 when it does not serve",
			help: "Shows the running daemon's view: the members of the cluster with their state, weight and health, and for each VIP its interface, mode, this host's health, the clients known and how many each host answers. " +
				"Exits 0 when this host serves every VIP, 5 when it runs but does not serve (no quorum, rejected by its peers, draining, an interface missing, a health check failing) and says why, so it can be a monitoring check.",
			examples: []string{"arpshare status", "arpshare status --json | jq .members"},
			flags:    []flagDef{flagConfig, flagSocket, flagJSON},
			run:      runStatus,
		},
		{
			name: "clients", args: []string{"[VIP]"}, vipArg: true, summary: "list the known clients and the host that answers each",
			help:     "Lists the clients this host has seen asking for VIP (a name or address; every VIP without it), or learned from its peers, with their MAC, when they last asked, and the host that answers them.",
			examples: []string{"arpshare clients web", "arpshare clients 198.18.0.100 --json"},
			flags:    []flagDef{flagConfig, flagSocket, flagVIP, flagJSON},
			run:      runClients,
		},
		{
			name: "owner", args: []string{"VIP", "CLIENT"}, vipArg: true, summary: "say which host answers CLIENT for VIP",
			help:     "Says which host answers the client at address CLIENT for VIP (a name or address), which hosts could, and whether this host has seen the client: the first question when a user says the service is unreachable.",
			examples: []string{"arpshare owner web 192.0.2.57", "arpshare owner 198.18.0.100 192.0.2.57 --json"},
			flags:    []flagDef{flagConfig, flagSocket, flagVIP, flagJSON},
			run:      runOwner,
		},
		{
			name: "drain", summary: "hand this host's clients to the others",
			help: "Drains this host: the others take its clients, and the command returns once each of them reports that it has re-pointed the clients it takes (a progress line on a terminal names the hosts it waits for); it exits 1 if that takes longer than --timeout, leaving the host drained. " +
				"A drain that would leave a VIP with no eligible host (this host is the last one, or the others drain or stop too and sort before it by name) is refused (exit 1, naming the VIPs) unless --force is given. " +
				"The host still accepts the VIPs' traffic while drained. The drain is kept in node.state_dir across restarts until `arpshare resume`. Prints the new status.",
			examples: []string{"arpshare drain && apt upgrade", "arpshare drain --timeout 20m   # node.repoint_rate set low for DAI", "arpshare drain --force   # every host, to shut the cluster down"},
			flags:    []flagDef{flagConfig, flagSocket, flagJSON, flagForce, flagTimeout},
			run:      runDrain,
		},
		{
			name: "resume", summary: "take this host's share of the clients back",
			help:     "Undoes `arpshare drain`. Prints the new status.",
			examples: []string{"arpshare resume"},
			flags:    []flagDef{flagConfig, flagSocket, flagJSON},
			run:      runDrain,
		},
		{
			name: "version", summary: "print the version",
			help:     "Prints the version stamped at build time, the commit, the Go version and the platform. `arpshare --version` does the same.",
			examples: []string{"arpshare version --json"},
			flags:    []flagDef{flagJSON},
			run:      runVersion,
		},
		{
			name: "help", args: []string{"[COMMAND]"}, summary: "show the help of arpshare or of one command",
			help:     "Shows the list of commands, or the help of one command (as `arpshare COMMAND --help` does).",
			examples: []string{"arpshare help status"},
			run:      runHelp,
		},
	}
}

func findCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// Usage is the top-level help.
func Usage() string {
	var b strings.Builder
	b.WriteString("arpshare shares one virtual IP across the hosts of an L2 segment: every healthy\nhost answers ARP and Neighbor Discovery for its own share of the clients.\n\n")
	b.WriteString("usage: arpshare COMMAND [ARGUMENTS] [flags]\n       arpshare --version | --help\n\nFlags may come before, between or after the arguments; -- ends them.\nA VIP is named by its name or its address, as an argument.\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-8s %s\n", c.name, c.summary)
	}
	b.WriteString("\n`arpshare COMMAND --help` shows a command's flags. Manual: man 8 arpshare, man 5 arpshare.toml.\n")
	return b.String()
}

// Help is one command's --help.
func (c *command) Help() string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: %s\n\n%s\n", c.synopsis(), wrap(c.help, 78, ""))
	if len(c.flags) > 0 {
		b.WriteString("\nflags:\n")
		for _, f := range c.flags {
			name := "--" + f.name
			if f.arg != "" {
				name += " " + f.arg
			}
			usage := f.usage
			if f.def != "" {
				usage += " (default " + f.def + ")"
			}
			fmt.Fprintf(&b, "  %s\n%s\n", name, wrap(usage, 78, "        "))
		}
	}
	if len(c.examples) > 0 {
		b.WriteString("\nexamples:\n")
		for _, ex := range c.examples {
			fmt.Fprintf(&b, "  %s\n", ex)
		}
	}
	return b.String()
}

func wrap(s string, width int, indent string) string {
	var lines []string
	line := indent
	for _, w := range strings.Fields(s) {
		if len(line) > len(indent) && len(line)+1+len(w) > width {
			lines = append(lines, line)
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += w
	}
	return strings.Join(append(lines, line), "\n")
}

// Main runs arpshare with args (without the program name) and returns the
// exit code.
func Main(args []string, stdout, stderr io.Writer, build Build) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, Usage())
		return ExitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		fmt.Fprint(stdout, Usage())
		return ExitOK
	case "-version", "--version":
		args = append([]string{"version"}, args[1:]...)
	}
	c := findCommand(args[0])
	if c == nil {
		fmt.Fprintf(stderr, "arpshare: unknown command %q\n\n%s", args[0], Usage())
		return ExitUsage
	}
	e := &env{build: build, stdout: stdout, stderr: stderr}
	e.fs = flag.NewFlagSet("arpshare "+c.name, flag.ContinueOnError)
	e.fs.SetOutput(io.Discard)
	for _, f := range c.flags {
		f.bind(e.fs, &e.opts, f.name, f.usage)
	}
	if err := e.parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, c.Help())
			return ExitOK
		}
		fmt.Fprintf(stderr, "arpshare %s: %v\n\n%s", c.name, err, c.Help())
		return ExitUsage
	}
	if e.opts.vip != "" && c.vipArg {
		// --vip VIP is the VIP argument, written as a flag.
		e.args = append([]string{e.opts.vip}, e.args...)
	}
	want := 0
	for _, a := range c.args {
		if !strings.HasPrefix(a, "[") {
			want++
		}
	}
	if len(e.args) < want || len(e.args) > len(c.args) {
		if len(e.args) > len(c.args) {
			fmt.Fprintf(stderr, "arpshare %s: unexpected argument %q\n", c.name, e.args[len(c.args)])
		} else {
			fmt.Fprintf(stderr, "arpshare %s: missing %s\n", c.name, strings.Join(c.args[len(e.args):], " "))
		}
		fmt.Fprintf(stderr, "usage: %s\n", c.synopsis())
		return ExitUsage
	}
	return c.run(e)
}

// parse parses the flags of args wherever they are, as ip, systemctl and
// git do: `arpshare owner web 192.0.2.57 --json`. "--" ends the flags: what
// follows is arguments only. The arguments are left in e.args, in order.
func (e *env) parse(args []string) error {
	var flags []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			e.args = append(e.args, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			e.args = append(e.args, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		// A flag that takes a value takes the next word, whatever it is.
		if f := e.fs.Lookup(name); f != nil && !isBoolFlag(f) && i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	return e.fs.Parse(flags)
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// printJSON prints v indented.
func (e *env) printJSON(v any) {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(e.stderr, "arpshare: %v\n", err)
	}
}

func runHelp(e *env) int {
	if len(e.args) == 0 {
		fmt.Fprint(e.stdout, Usage())
		return ExitOK
	}
	c := findCommand(e.args[0])
	if c == nil {
		fmt.Fprintf(e.stderr, "arpshare help: unknown command %q\n\n%s", e.args[0], Usage())
		return ExitUsage
	}
	fmt.Fprint(e.stdout, c.Help())
	return ExitOK
}

func runVersion(e *env) int {
	v := struct {
		Version   string `json:"version"`
		Commit    string `json:"commit"`
		GoVersion string `json:"go_version"`
		Platform  string `json:"platform"`
	}{e.build.Version, e.build.Commit, runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH}
	if e.opts.json {
		e.printJSON(v)
		return ExitOK
	}
	fmt.Fprintf(e.stdout, "arpshare %s (commit %s, %s %s)\n", v.Version, v.Commit, v.GoVersion, v.Platform)
	return ExitOK
}

func runKeygen(e *env) int {
	key := make([]byte, 32)
	rand.Read(key)
	s := base64.StdEncoding.EncodeToString(key)
	if e.opts.output == "" && (e.opts.group != "" || e.opts.force) {
		fmt.Fprintf(e.stderr, "arpshare keygen: --group and --force need --output\n")
		return ExitUsage
	}
	if e.opts.output != "" {
		mode, err := writeKeyFile(e.opts.output, s+"\n", e.opts.group, e.opts.force)
		if err != nil {
			fmt.Fprintf(e.stderr, "arpshare keygen: %v\n", err)
			return ExitFailure
		}
		if e.opts.json {
			e.printJSON(struct {
				File string `json:"file"`
				Mode string `json:"mode"`
			}{e.opts.output, fmt.Sprintf("%04o", mode)})
		} else {
			fmt.Fprintf(e.stdout, "wrote a new key to %s (mode %04o)\n", e.opts.output, mode)
		}
		return ExitOK
	}
	if e.opts.json {
		e.printJSON(struct {
			Key string `json:"key"`
		}{s})
		return ExitOK
	}
	fmt.Fprintln(e.stdout, s)
	return ExitOK
}

// CheckResult is what `arpshare check --json` prints.
type CheckResult struct {
	Config   string   `json:"config"`
	OK       bool     `json:"ok"`
	Errors   []string `json:"errors"`
	Warnings []string `json:"warnings"`
	// Notes say what the check found that is as expected (the gossip
	// port held by this host's own running daemon).
	Notes []string `json:"notes"`
}

func runCheck(e *env) int {
	res := CheckResult{Config: e.opts.config, Errors: []string{}, Warnings: []string{}, Notes: []string{}}
	cfg, err := config.LoadConfig(e.opts.config)
	if err != nil {
		res.Errors = append(res.Errors, strings.Split(err.Error(), "\n")...)
	} else {
		res.Warnings = append(res.Warnings, cfg.Warnings...)
		if !e.opts.offline {
			for _, f := range cfg.CheckHost() {
				if f.Error {
					res.Errors = append(res.Errors, f.Message)
				} else if f.Note {
					res.Notes = append(res.Notes, f.Message)
				} else {
					res.Warnings = append(res.Warnings, f.Message)
				}
			}
		}
	}
	res.OK = len(res.Errors) == 0
	if e.opts.json {
		e.printJSON(res)
	} else {
		for _, m := range res.Errors {
			fmt.Fprintln(e.stderr, m)
		}
		for _, w := range res.Warnings {
			fmt.Fprintf(e.stderr, "%s: warning: %s\n", e.opts.config, w)
		}
		if res.OK {
			for _, n := range res.Notes {
				fmt.Fprintf(e.stdout, "%s: %s\n", e.opts.config, n)
			}
			fmt.Fprintf(e.stdout, "%s: ok\n", e.opts.config)
		}
	}
	if !res.OK {
		return ExitFailure
	}
	return ExitOK
}

// socketPath is --socket, else api.socket from the config file, else the
// default. A config given with --config must be readable; the default one
// may be missing or unreadable (a user in the arpshare group, say).
func (e *env) socketPath() (string, error) {
	if e.opts.socket != "" {
		return e.opts.socket, nil
	}
	explicit := false
	e.fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	s, err := config.SocketFromConfig(e.opts.config)
	if err != nil {
		if explicit {
			return "", err
		}
		return config.DefaultSocket, nil
	}
	return s, nil
}

// askDaemon runs one call to the daemon and turns the usual failures into
// advice and an exit code.
func (e *env) askDaemon(call func(ctx context.Context, socket string) error) int {
	socket, err := e.socketPath()
	if err != nil {
		fmt.Fprintf(e.stderr, "arpshare: %v\n", err)
		return ExitFailure
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(30*time.Second, e.callTimeout))
	defer cancel()
	err = call(ctx, socket)
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		fmt.Fprintf(e.stderr, "arpshare is not running (no socket at %s); try: systemctl status arpshare\n", socket)
		return ExitNotRunning
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		fmt.Fprintf(e.stderr, "arpshare: permission denied on %s: run this as root (sudo), or, to read status, join the arpshare-status group (usermod -aG arpshare-status $USER, then log in again)\n", socket)
		return ExitDenied
	}
	fmt.Fprintf(e.stderr, "arpshare %s: %v\n", e.fs.Name()[len("arpshare "):], err)
	return ExitFailure
}

func runStatus(e *env) int {
	var s api.Status
	if code := e.askDaemon(func(ctx context.Context, socket string) (err error) {
		s, err = api.GetStatus(ctx, socket)
		return err
	}); code != ExitOK {
		return code
	}
	if e.opts.json {
		e.printJSON(s)
	} else {
		printStatus(e.stdout, s)
	}
	if !s.Serving {
		return ExitNotServing
	}
	return ExitOK
}

func runDrain(e *env) int {
	var s api.Status
	drain := e.fs.Name() == "arpshare drain"
	timeout := time.Duration(0)
	if drain {
		var err error
		if timeout, err = time.ParseDuration(e.opts.timeout); err != nil || timeout <= 0 {
			fmt.Fprintf(e.stderr, "arpshare drain: --timeout %q: want a positive duration such as 90s or 10m\n", e.opts.timeout)
			return ExitUsage
		}
		e.callTimeout = timeout + 30*time.Second
	}
	if code := e.askDaemon(func(ctx context.Context, socket string) (err error) {
		if s, err = api.Drain(ctx, socket, drain, e.opts.force); err != nil || !drain {
			return err
		}
		s, err = e.waitDrained(ctx, socket, s, timeout)
		return err
	}); code != ExitOK {
		return code
	}
	if e.opts.json {
		e.printJSON(s)
	} else {
		printStatus(e.stdout, s)
	}
	return ExitOK
}

// waitDrained polls the daemon until its peers have taken its clients,
// with a progress line on a terminal.
func (e *env) waitDrained(ctx context.Context, socket string, s api.Status, timeout time.Duration) (api.Status, error) {
	start := time.Now()
	f, _ := e.stderr.(*os.File)
	tty := f != nil && isTerminal(f)
	defer func() {
		if tty {
			fmt.Fprint(e.stderr, "\r\033[K")
		}
	}()
	for s.Drain != nil && !s.Drain.Done {
		if time.Since(start) > timeout {
			return s, fmt.Errorf("not done within %s: no report yet that %s re-pointed this host's clients; this host stays drained (`arpshare status` shows the drain, `arpshare resume` undoes it)",
				timeout, strings.Join(s.Drain.Waiting, ", "))
		}
		if tty {
			fmt.Fprintf(e.stderr, "\r\033[Kdraining: waiting for %s to re-point this host's clients (%s)", strings.Join(s.Drain.Waiting, ", "), time.Since(start).Round(time.Second))
		}
		select {
		case <-ctx.Done():
			return s, ctx.Err()
		case <-time.After(drainPoll):
		}
		var err error
		if s, err = api.GetStatus(ctx, socket); err != nil {
			return s, err
		}
	}
	return s, nil
}

// isTerminal reports whether f is a terminal, for progress lines.
func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// drainPoll is how often `arpshare drain` asks how far the drain is.
const drainPoll = 200 * time.Millisecond

func runClients(e *env) int {
	var cs []api.ClientStatus
	if code := e.askDaemon(func(ctx context.Context, socket string) (err error) {
		vip := ""
		if len(e.args) > 0 {
			vip = e.args[0]
		}
		cs, err = api.GetClients(ctx, socket, vip)
		return err
	}); code != ExitOK {
		return code
	}
	if e.opts.json {
		e.printJSON(cs)
		return ExitOK
	}
	printClients(e.stdout, cs)
	return ExitOK
}

func runOwner(e *env) int {
	var o api.OwnerStatus
	if code := e.askDaemon(func(ctx context.Context, socket string) (err error) {
		o, err = api.GetOwner(ctx, socket, e.args[0], e.args[1])
		return err
	}); code != ExitOK {
		return code
	}
	if e.opts.json {
		e.printJSON(o)
		return ExitOK
	}
	printOwner(e.stdout, o)
	return ExitOK
}

// runDaemon is `arpshare run`.
func runDaemon(e *env) int {
	log, err := newLogger(e.opts.logLevel, e.stderr, os.Getenv("JOURNAL_STREAM"))
	if err != nil {
		fmt.Fprintf(e.stderr, "arpshare run: %v\n", err)
		return ExitUsage
	}
	return serve(e, log)
}

// commandNames lists the commands, for completion.
func commandNames() []string {
	var out []string
	for _, c := range commands {
		out = append(out, c.name)
	}
	return slices.Clip(out)
}
