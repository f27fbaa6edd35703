// Command wrenctl drives a Wren or Kata agent from the host: it calls any
// AgentService or Health RPC by name with a protojson request, runs
// containers through the agent, and starts and stops pod VMs to run one in.
//
//	wrenctl [--addr URI] [--timeout DURATION] RPC [REQUEST]
//	wrenctl list | describe RPC | run | exec | vm | completion bash | help
//
// REQUEST is protojson text, @file.json, or - for stdin; omitted means an
// empty request. SetPolicy also takes a policy file (Rego) as REQUEST. The response is printed as protojson. Exit status: 0 on
// success (and for --help everywhere), 1 when the RPC or command fails, 2 on
// a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// globals are the flags that precede the RPC or subcommand.
type globals struct {
	addr    string
	timeout time.Duration
}

// command is a verb that is not an RPC name.
type command struct {
	name string
	// synopsis is the usage line(s) without "usage: ".
	synopsis string
	// summary is the one line `wrenctl help` shows.
	summary string
	// flags defines the command's flags on fs (nil: it has none); help and
	// shell completion list them from there.
	flags func(fs *flag.FlagSet)
	run   func(g globals, args []string) int
}

// commands are the verbs in the order help lists them; filled in init, as
// help and completion refer back to the table.
var commands []*command

func init() {
	commands = []*command{
		{name: "list", synopsis: "wrenctl list", summary: "every RPC with a one-line description", run: listCommand},
		{name: "describe", synopsis: "wrenctl describe [--example] RPC", summary: "an RPC's request fields (names, types, nesting) and a JSON example", flags: describeFlags, run: describeCommand},
		{name: "run", synopsis: "wrenctl run [--bundle DIR] [--shared-dir DIR] [--tty] [--detach] ID", summary: "run a container from an OCI bundle through the agent, like runc run", flags: runFlags, run: runCommand},
		{name: "exec", synopsis: "wrenctl exec [--tty] [--cwd DIR] [--env K=V]... ID CMD [ARG...]", summary: "run a process in a running container, like runc exec", flags: execFlags, run: execCommand},
		{name: "vm", synopsis: "wrenctl vm up|status|down|console [--dir STATE] ...", summary: "start, inspect and stop a pod VM with the agent inside (wrenctl vm --help)", run: vmCommand},
		{name: "completion", synopsis: "wrenctl completion bash", summary: "print a bash completion script: source <(wrenctl completion bash)", run: completionCommand},
		{name: "help", synopsis: "wrenctl help [COMMAND|RPC]", summary: "this text, a command's usage, or what an RPC takes", run: helpCommand},
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

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// globalFlags defines the flags that precede the command or RPC.
func globalFlags(fs *flag.FlagSet, g *globals) {
	fs.StringVar(&g.addr, "addr", os.Getenv("WREN_ADDR"), "agent address: vsock://CID:PORT, hvsock://UDS:PORT, unix:///path, unix://@name (default $WREN_ADDR)")
	fs.DurationVar(&g.timeout, "timeout", 60*time.Second, "deadline of one RPC")
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wrenctl", flag.ContinueOnError)
	var g globals
	globalFlags(fs, &g)
	if code, ok := parseFlags(fs, args, func(w io.Writer) { topUsage(w) }, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() == 0 {
		topUsage(stderr)
		return exitUsage
	}
	name, rest := fs.Arg(0), fs.Args()[1:]
	if c := findCommand(name); c != nil {
		return c.run(g, rest)
	}
	return callCommand(g, name, rest, stdin, stdout, stderr)
}

// topUsage is `wrenctl --help`.
func topUsage(w io.Writer) {
	fmt.Fprint(w, `wrenctl drives a Wren (or Kata) agent through its ttrpc API, and runs pod VMs
with the agent inside.

usage: wrenctl [--addr URI] [--timeout DURATION] COMMAND [ARG...]
       wrenctl [--addr URI] [--timeout DURATION] RPC [REQUEST]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
RPC is a name from 'wrenctl list' (Check, CreateSandbox, ...). REQUEST is protojson
text, @file.json, or - for stdin; 'wrenctl describe RPC' shows the fields and an
example. SetPolicy also takes a policy file: wrenctl SetPolicy policy.rego. The
reply is printed as protojson.

Global flags:
`)
	fs := flag.NewFlagSet("wrenctl", flag.ContinueOnError)
	globalFlags(fs, &globals{})
	printFlags(w, fs)
	fmt.Fprint(w, `
Examples:
  wrenctl vm up --dir /tmp/vm                 # boot a pod VM; prints addr= and shared_dir=
  wrenctl --addr ADDR Check                   # is the agent serving?
  wrenctl --addr ADDR run --shared-dir DIR --bundle BUNDLE c1
  wrenctl vm down --dir /tmp/vm

Exit status: 0 on success and for --help, 1 when the RPC or command fails,
2 on a usage error.
`)
}

// commandUsage prints a command's synopsis, summary and flags.
func commandUsage(w io.Writer, c *command) {
	fmt.Fprintf(w, "usage: %s\n\n%s.\n", c.synopsis, upperFirst(c.summary))
	if c.flags != nil {
		fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
		c.flags(fs)
		fmt.Fprintln(w, "\nFlags:")
		printFlags(w, fs)
	}
}

// parseFlags parses args into fs. Asked for help (-h, --help) it prints
// usage on stdout and returns exitOK; a bad flag prints the error and the
// usage on stderr and returns exitUsage; ok is false in both cases.
func parseFlags(fs *flag.FlagSet, args []string, usage func(io.Writer), stdout, stderr io.Writer) (code int, ok bool) {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	switch {
	case err == nil:
		return exitOK, true
	case errors.Is(err, flag.ErrHelp):
		usage(stdout)
		return exitOK, false
	}
	fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
	usage(stderr)
	return exitUsage, false
}

// parseCommandFlags is parseFlags with the command's own usage.
func parseCommandFlags(c *command, fs *flag.FlagSet, args []string) (int, bool) {
	return parseFlags(fs, args, func(w io.Writer) { commandUsage(w, c) }, os.Stdout, os.Stderr)
}

// printFlags lists fs's flags as --name TYPE, description and default.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		head := "--" + f.Name
		if typ != "" {
			head += " " + typ
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && !strings.Contains(usage, "default") {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		if len(head) <= 20 {
			fmt.Fprintf(w, "  %-20s %s\n", head, usage)
		} else {
			fmt.Fprintf(w, "  %s\n  %-20s %s\n", head, "", usage)
		}
	})
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// helpCommand is `wrenctl help [COMMAND|RPC]`.
func helpCommand(_ globals, args []string) int {
	switch {
	case len(args) == 0 || len(args) == 1 && isHelpFlag(args[0]):
		topUsage(os.Stdout)
		return exitOK
	case len(args) > 1:
		return usageError(os.Stderr, "help takes one COMMAND or RPC")
	}
	if args[0] == "vm" {
		fmt.Fprintln(os.Stdout, vmUsage)
		return exitOK
	}
	if c := findCommand(args[0]); c != nil {
		commandUsage(os.Stdout, c)
		return exitOK
	}
	if m, ok := findMethod(args[0]); ok {
		_ = describe(os.Stdout, m, false) // stdout: a failed write has nowhere to be reported
		return exitOK
	}
	return usageError(os.Stderr, "help: no command or RPC %q (see 'wrenctl help' and 'wrenctl list')", args[0])
}

// usageError prints a usage problem and returns the usage exit status.
func usageError(stderr io.Writer, format string, a ...any) int {
	fmt.Fprintf(stderr, "wrenctl: "+format+"\n", a...)
	return exitUsage
}

// rpcContext bounds one RPC by --timeout.
func (g globals) rpcContext() (context.Context, context.CancelFunc) {
	if g.timeout <= 0 {
		return context.WithCancel(context.Background())
	}
	return context.WithTimeout(context.Background(), g.timeout)
}
