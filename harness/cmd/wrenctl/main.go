// Command wrenctl drives a Wren or Kata agent from the host: it calls any
// AgentService or Health RPC by name with a protojson request, and runs
// containers and pod VMs through the agent.
//
//	wrenctl [--addr URI] [--timeout DURATION] RPC [REQUEST]
//	wrenctl list
//	wrenctl run [--bundle DIR] [--tty] [--detach] ID
//	wrenctl exec [--tty] ID CMD [ARG...]
//
// REQUEST is protojson text, @file.json, or - for stdin; omitted means an
// empty request. The response is printed as protojson. Exit status: 0 on
// success, 1 when the RPC fails, 2 on a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
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

// subcommands are the verbs that are not RPC names.
var subcommands = map[string]func(g globals, args []string) int{
	"list": listCommand,
	"run":  runCommand,
	"exec": execCommand,
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wrenctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var g globals
	fs.StringVar(&g.addr, "addr", os.Getenv("WREN_ADDR"), "agent address: vsock://CID:PORT, hvsock://UDS:PORT, unix:///path, unix://@name (default $WREN_ADDR)")
	fs.DurationVar(&g.timeout, "timeout", 60*time.Second, "deadline of one RPC")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: wrenctl [--addr URI] [--timeout DURATION] RPC [REQUEST]")
		fmt.Fprintln(stderr, "       wrenctl list")
		fmt.Fprintln(stderr, "       wrenctl run [--bundle DIR] [--tty] [--detach] ID")
		fmt.Fprintln(stderr, "       wrenctl exec [--tty] ID CMD [ARG...]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	name, rest := fs.Arg(0), fs.Args()[1:]
	if sub, ok := subcommands[name]; ok {
		return sub(g, rest)
	}
	return callCommand(g, name, rest, stdin, stdout, stderr)
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
