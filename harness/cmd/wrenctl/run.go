package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"

	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// runOptions are run's flags.
type runOptions struct {
	bundle, sharedDir string
	tty, detach       bool
	passfd            uint
}

func (o *runOptions) define(fs *flag.FlagSet) {
	fs.StringVar(&o.bundle, "bundle", ".", "OCI bundle directory (config.json and the rootfs it names)")
	fs.BoolVar(&o.tty, "tty", false, "give the container a terminal")
	fs.BoolVar(&o.detach, "detach", false, "start the container and return without waiting")
	fs.UintVar(&o.passfd, "passfd", 0, "the agent's passfd port (Kata's default: 1027; hvsock addresses only): stdout and stderr go through host connections the container writes directly, instead of ReadStdout; stdin is not connected")
	fs.StringVar(&o.sharedDir, "shared-dir", "", "for an agent in a pod VM: the host side of its virtio-fs share, the shared_dir= that 'wrenctl vm up' prints; the rootfs is copied there and mounted in the guest as a Kata shim does")
}

func runFlags(fs *flag.FlagSet) { new(runOptions).define(fs) }

// runCommand is `wrenctl run [--bundle DIR] [--tty] [--detach] ID`: the
// `runc run` experience over the agent API. It creates the sandbox if there
// is none, creates and starts the container from the bundle's config.json,
// attaches stdio, waits, removes the container and exits with its status.
func runCommand(g globals, args []string) int {
	o, id, code, ok := runArgs(g, args)
	if !ok {
		return code
	}
	spec, err := loadBundle(o.bundle)
	if err != nil {
		fmt.Fprintf(os.Stderr, "wrenctl: %v\n", err)
		return exitError
	}
	if o.tty {
		spec.Process.Terminal = true
	}
	storages, unshare, err := shareBundle(o.sharedDir, id, spec)
	if err != nil {
		fmt.Fprintf(os.Stderr, "wrenctl: %v\n", err)
		return exitError
	}
	// A detached container keeps its rootfs in the share once it started.
	keepShare := false
	defer func() {
		if !keepShare {
			unshare()
		}
	}()

	dctx, cancel := g.rpcContext()
	defer cancel()
	c, err := client.Dial(dctx, g.addr)
	if err != nil {
		return dialFailed(os.Stderr, g.addr, err)
	}
	defer c.Close()
	var out *outputConns
	var pf *passfdConns
	switch {
	case o.passfd != 0 && (o.detach || spec.Process.Terminal):
		return usageError(os.Stderr, "--passfd streams the output of a container run in the foreground without a terminal")
	case o.passfd != 0:
		if pf, err = dialPassfd(g, uint32(o.passfd)); err != nil {
			fmt.Fprintf(os.Stderr, "wrenctl: %v\n", err)
			return exitError
		}
		defer pf.Close()
	case !o.detach:
		if out, err = dialOutput(g, spec.Process.Terminal); err != nil {
			fmt.Fprintf(os.Stderr, "wrenctl: %v\n", err)
			return exitError
		}
		defer out.Close()
	}

	if code, ok := createRunContainer(g, c, id, spec, storages, pf); !ok {
		return code
	}
	if pf != nil {
		return runPassfd(g, c, pf, id)
	}
	if o.detach {
		if err := startContainer(g, c, id); err != nil {
			removeContainer(g, c, id)
			return rpcFailed("StartContainer", err)
		}
		keepShare = true
		return exitOK
	}
	return runAttached(g, c, out, id, spec.Process.Terminal)
}

// runArgs parses run's flags and argument, the container ID, and checks
// the agent address; when ok is false, run exits with code.
func runArgs(g globals, args []string) (o runOptions, id string, code int, ok bool) {
	cmd := findCommand("run")
	fs := flag.NewFlagSet("wrenctl run", flag.ContinueOnError)
	o.define(fs)
	if code, ok := parseCommandFlags(cmd, fs, args); !ok {
		return o, "", code, false
	}
	if fs.NArg() != 1 {
		commandUsage(os.Stderr, cmd)
		return o, "", exitUsage, false
	}
	if g.addr == "" {
		return o, "", usageError(os.Stderr, "no agent address: use --addr or set WREN_ADDR"), false
	}
	if o.sharedDir == "" && inVM(g.addr) {
		return o, "", usageError(os.Stderr, "run: the agent at %s is in a VM and cannot see this host's files: the bundle's rootfs must be in the VM's share.\n"+
			"  Add --shared-dir DIR, DIR being the shared_dir= line `wrenctl vm up` printed (wrenctl vm status prints it too);\n"+
			"  wrenctl then copies the rootfs there and has the agent mount the share, as a Kata shim does", g.addr), false
	}
	if err := checkAddr(g.addr); err != nil {
		fmt.Fprintf(os.Stderr, "wrenctl: %v\n", err)
		return o, "", exitError, false
	}
	return o, fs.Arg(0), exitOK, true
}

// createRunContainer creates the sandbox unless it exists, then the
// container; when ok is false, it reported a failure and run exits with code.
func createRunContainer(g globals, c *client.Client, id string, spec *specs.Spec, storages []*agentpb.Storage, pf *passfdConns) (code int, ok bool) {
	if err := call(g, func(ctx context.Context) error {
		_, err := c.Agent.CreateSandbox(ctx, &agentpb.CreateSandboxRequest{Hostname: spec.Hostname, SandboxId: id, Storages: storages})
		if err != nil && codeOf(err) == codes.AlreadyExists {
			return nil
		}
		return err
	}); err != nil {
		return rpcFailed("CreateSandbox", err), false
	}
	if err := call(g, func(ctx context.Context) error {
		req := &agentpb.CreateContainerRequest{ContainerId: id, ExecId: id, OCI: ocispec.FromSpec(spec)}
		if pf != nil {
			req.StdoutPort, req.StderrPort = pf.outPort, pf.errPort
		}
		_, err := c.Agent.CreateContainer(ctx, req)
		return err
	}); err != nil {
		return rpcFailed("CreateContainer", err), false
	}
	return exitOK, true
}

// runAttached attaches stdio to the created container, starts it, waits
// for it and removes it; it returns the container's exit status.
func runAttached(g globals, c *client.Client, out *outputConns, id string, terminal bool) int {
	ctx := context.Background()
	// Attach before starting so that not a byte of output is missed.
	if terminal {
		defer rawTerminal()()
	}
	wait := attach(ctx, c, out, id, id, terminal, os.Stdin, os.Stdout, os.Stderr)
	if err := startContainer(g, c, id); err != nil {
		removeContainer(g, c, id)
		return rpcFailed("StartContainer", err)
	}
	code, err := waitProcess(ctx, c, id, id, wait)
	removeContainer(g, c, id)
	if err != nil {
		return rpcFailed("WaitProcess", err)
	}
	return code
}

// startContainer starts the created container.
func startContainer(g globals, c *client.Client, id string) error {
	return call(g, func(ctx context.Context) error {
		_, err := c.Agent.StartContainer(ctx, &agentpb.StartContainerRequest{ContainerId: id})
		return err
	})
}

// removeContainer removes the container, reporting a failure.
func removeContainer(g globals, c *client.Client, id string) {
	if err := call(g, func(ctx context.Context) error {
		_, err := c.Agent.RemoveContainer(ctx, &agentpb.RemoveContainerRequest{ContainerId: id})
		return err
	}); err != nil {
		rpcFailed("RemoveContainer", err)
	}
}

// waitProcess waits for the exit status and for the output to drain.
func waitProcess(ctx context.Context, c *client.Client, cid, execID string, drained func() error) (int, error) {
	resp, err := c.Agent.WaitProcess(ctx, &agentpb.WaitProcessRequest{ContainerId: cid, ExecId: execID})
	if err != nil {
		return 0, err
	}
	if err := drained(); err != nil {
		fmt.Fprintf(os.Stderr, "wrenctl: output: %s\n", rpcMessage(err))
	}
	return int(resp.Status), nil
}

// call runs one short RPC under the --timeout deadline.
func call(g globals, fn func(ctx context.Context) error) error {
	ctx, cancel := g.rpcContext()
	defer cancel()
	return fn(ctx)
}

// loadBundle reads config.json and makes its root path absolute (the agent
// resolves it in its own file system, which here is the host's).
func loadBundle(dir string) (*specs.Spec, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(abs, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("bundle config.json: %w", err)
	}
	if spec.Process == nil || spec.Root == nil {
		return nil, fmt.Errorf("bundle config.json: process and root are required")
	}
	if !filepath.IsAbs(spec.Root.Path) {
		spec.Root.Path = filepath.Join(abs, spec.Root.Path)
	}
	return &spec, nil
}
