package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"

	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// execOptions are exec's flags.
type execOptions struct {
	tty    bool
	cwd    string
	env    multiFlag
	passfd uint
}

func (o *execOptions) define(fs *flag.FlagSet) {
	fs.BoolVar(&o.tty, "tty", false, "give the process a terminal")
	fs.StringVar(&o.cwd, "cwd", "/", "working directory in the container")
	fs.Var(&o.env, "env", "environment variable NAME=VALUE (repeatable; default PATH only)")
	fs.UintVar(&o.passfd, "passfd", 0, "the agent's passfd port (Kata's default: 1027; hvsock addresses only): stdout and stderr go through host connections the process writes directly; stdin is not connected")
}

func execFlags(fs *flag.FlagSet) { new(execOptions).define(fs) }

// execCommand is `wrenctl exec [--tty] ID CMD [ARG...]`: the `runc exec`
// experience. It runs CMD in the running container ID with this process's
// stdio and exits with CMD's status.
func execCommand(g globals, args []string) int {
	cmd := findCommand("exec")
	fs := flag.NewFlagSet("wrenctl exec", flag.ContinueOnError)
	var o execOptions
	o.define(fs)
	if code, ok := parseCommandFlags(cmd, fs, args); !ok {
		return code
	}
	if fs.NArg() < 2 {
		commandUsage(os.Stderr, cmd)
		return exitUsage
	}
	env := o.env
	if g.addr == "" {
		return usageError(os.Stderr, "no agent address: use --addr or set WREN_ADDR")
	}
	if err := checkAddr(g.addr); err != nil {
		fmt.Fprintf(os.Stderr, "wrenctl: %v\n", err)
		return exitError
	}
	id, argv := fs.Arg(0), fs.Args()[1:]
	if len(env) == 0 {
		env = multiFlag{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
		if o.tty {
			env = append(env, "TERM=xterm")
		}
	}
	execID := "exec-" + randomSuffix()

	ctx := context.Background()
	dctx, cancel := g.rpcContext()
	defer cancel()
	c, err := client.Dial(dctx, g.addr)
	if err != nil {
		return dialFailed(os.Stderr, g.addr, err)
	}
	defer c.Close()
	req := &agentpb.ExecProcessRequest{ContainerId: id, ExecId: execID,
		Process: &agentpb.Process{Terminal: o.tty, Args: argv, Env: env, Cwd: o.cwd, User: &agentpb.User{}}}
	if o.passfd != 0 {
		if o.tty {
			return usageError(os.Stderr, "--passfd streams the output of a process without a terminal")
		}
		pf, err := dialPassfd(g, uint32(o.passfd))
		if err != nil {
			fmt.Fprintf(os.Stderr, "wrenctl: %v\n", err)
			return exitError
		}
		defer pf.Close()
		req.StdoutPort, req.StderrPort = pf.outPort, pf.errPort
		if err := call(g, func(ctx context.Context) error { _, err := c.Agent.ExecProcess(ctx, req); return err }); err != nil {
			return rpcFailed("ExecProcess", err)
		}
		code, err := waitProcess(ctx, c, id, execID, pf.copyOut(os.Stdout, os.Stderr))
		if err != nil {
			return rpcFailed("WaitProcess", err)
		}
		return code
	}
	out, err := dialOutput(g, o.tty)
	if err != nil {
		fmt.Fprintf(os.Stderr, "wrenctl: %v\n", err)
		return exitError
	}
	defer out.Close()
	if err := call(g, func(ctx context.Context) error { _, err := c.Agent.ExecProcess(ctx, req); return err }); err != nil {
		return rpcFailed("ExecProcess", err)
	}
	if o.tty {
		defer rawTerminal()()
	}
	wait := attach(ctx, c, out, id, execID, o.tty, os.Stdin, os.Stdout, os.Stderr)
	code, err := waitProcess(ctx, c, id, execID, wait)
	if err != nil {
		return rpcFailed("WaitProcess", err)
	}
	return code
}

func randomSuffix() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint(*m) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
