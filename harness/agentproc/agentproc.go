// Package agentproc runs the real wren-agent binary as a host process
// serving on a unix socket: the one way the tests (harness/testagent) and
// the benchmarks (harness/bench) start, wait for and stop an agent.
package agentproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/internal/testbundle"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// Options say how to run an agent.
type Options struct {
	// Bin is the wren-agent binary.
	Bin string
	// Dir is a fresh directory for the agent's socket (agent.sock) and
	// state root (state).
	Dir string
	// CgroupParent, if set, is passed as --cgroup-parent. Args may name
	// another; the last one counts, and Stop removes it.
	CgroupParent string
	// LogLevel is the --log-level ("debug" when empty).
	LogLevel string
	// Args follow the defaults (a flag given twice takes its last value).
	Args []string
	// Env is added to the environment, which the agent inherits without
	// the WREN_AGENT_SERVER_ADDR and WREN_AGENT_LOG_LEVEL of the caller.
	Env []string
	// Stderr receives the agent's log (discarded when nil).
	Stderr io.Writer
	// Wrapper, if set, is a command line that runs the agent's command
	// line appended to it in its own place (exec), such as an unshare
	// that prepares a mount namespace first.
	Wrapper []string
	// NewNetNS runs the agent in a network namespace of its own (holding
	// only a loopback device, down); the socket, a path, stays reachable.
	NewNetNS bool
}

// Proc is a running agent.
type Proc struct {
	// Addr is the agent's address (unix:///...).
	Addr string
	// StateRoot is the agent's state directory.
	StateRoot string
	// CgroupParent holds the cgroups of the agent's containers ("" when
	// the agent uses its default).
	CgroupParent string
	// Cmd is the running process.
	Cmd    *exec.Cmd
	exited chan struct{}
}

// readyTimeout bounds the wait for the first answer to Health.Check.
const readyTimeout = 20 * time.Second

// Start runs the agent and waits until it answers Health.Check (at most
// 20 s, less if ctx ends sooner). On failure nothing is left running.
func Start(ctx context.Context, o Options) (*Proc, error) {
	p := &Proc{
		Addr:         "unix://" + filepath.Join(o.Dir, "agent.sock"),
		StateRoot:    filepath.Join(o.Dir, "state"),
		CgroupParent: cgroupParent(o.CgroupParent, o.Args),
		exited:       make(chan struct{}),
	}
	level := o.LogLevel
	if level == "" {
		level = "debug"
	}
	argv := []string{o.Bin, "--server-addr", p.Addr, "--state-root", p.StateRoot, "--log-level", level}
	if o.CgroupParent != "" {
		argv = append(argv, "--cgroup-parent", o.CgroupParent)
	}
	argv = slices.Concat(o.Wrapper, argv, o.Args)
	p.Cmd = exec.Command(argv[0], argv[1:]...)
	p.Cmd.Stderr = o.Stderr
	p.Cmd.Env = append(append(os.Environ(), "WREN_AGENT_SERVER_ADDR=", "WREN_AGENT_LOG_LEVEL="), o.Env...)
	if o.NewNetNS {
		p.Cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	}
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", o.Bin, err)
	}
	go func() {
		_ = p.Cmd.Wait() // its outcome is in Cmd.ProcessState
		close(p.exited)
	}()
	if err := p.waitReady(ctx); err != nil {
		_ = p.Stop()
		return nil, err
	}
	return p, nil
}

// cgroupParent is the --cgroup-parent the agent ends up with: the last one
// of args, else def.
func cgroupParent(def string, args []string) string {
	for i, arg := range args {
		switch {
		case (arg == "--cgroup-parent" || arg == "-cgroup-parent") && i+1 < len(args):
			def = args[i+1]
		case strings.HasPrefix(arg, "--cgroup-parent="):
			def = strings.TrimPrefix(arg, "--cgroup-parent=")
		}
	}
	return def
}

func (p *Proc) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("agent exited before serving: %v", p.Cmd.ProcessState)
		default:
		}
		if c, err := client.Dial(ctx, p.Addr); err == nil {
			_, err = c.Health.Check(ctx, &agentpb.CheckRequest{})
			c.Close()
			if err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agent did not answer Check: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Exited is closed once the agent has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// PID is the agent's process id.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// stopGrace is how long Stop waits after SIGTERM before SIGKILL.
const stopGrace = 10 * time.Second

// Stop ends the agent with SIGTERM (SIGKILL after 10 s) and removes its
// cgroup parent. It reports an agent that had to be killed; stopping an
// agent that has exited only removes the cgroup parent.
func (p *Proc) Stop() error {
	if p.CgroupParent != "" {
		defer testbundle.RemoveCgroupParent(p.CgroupParent)
	}
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM) // fails only once it has exited
	select {
	case <-p.exited:
		return nil
	case <-time.After(stopGrace):
		_ = p.Cmd.Process.Kill()
		<-p.exited
		return errors.New("agent ignored SIGTERM for 10 s; killed")
	}
}
