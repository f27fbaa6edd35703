package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/internal/testbundle"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// AgentProc is a wren-agent process serving on a unix socket.
type AgentProc struct {
	Addr   string
	Dir    string
	Cmd    *exec.Cmd
	exited chan struct{}
	// cgroupParent is removed when the agent stops ("" when the agent
	// binary predates the flag and uses its default).
	cgroupParent string
}

// StartAgent runs the agent binary with env added to the benchmark's
// environment, in a fresh directory under dir, and waits until it answers
// Health.Check. Its stderr goes to agent.log in that directory.
func StartAgent(ctx context.Context, bin, dir string, env []string, args ...string) (*AgentProc, error) {
	d, err := os.MkdirTemp(dir, "agent-")
	if err != nil {
		return nil, err
	}
	a := &AgentProc{Addr: "unix://" + filepath.Join(d, "agent.sock"), Dir: d, exited: make(chan struct{})}
	logf, err := os.Create(filepath.Join(d, "agent.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	base := []string{"--server-addr", a.Addr, "--state-root", filepath.Join(d, "state"), "--log-level", "warn"}
	if knowsCgroupParent(bin) {
		// Its own cgroup parent, so two benchmark runs (or a test run) on
		// one machine never share container cgroups.
		a.cgroupParent = "wren-bench-" + filepath.Base(d)
		base = append(base, "--cgroup-parent", a.cgroupParent)
	}
	a.Cmd = exec.Command(bin, append(base, args...)...)
	a.Cmd.Stderr = logf
	a.Cmd.Env = append(append(os.Environ(), "WREN_AGENT_SERVER_ADDR=", "WREN_AGENT_LOG_LEVEL="), env...)
	if err := a.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { _ = a.Cmd.Wait(); close(a.exited) }() // Stop tells how it ended; its status is no news
	deadline, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		select {
		case <-a.exited:
			return nil, fmt.Errorf("agent exited before serving: %v (log in %s)", a.Cmd.ProcessState, d)
		default:
		}
		if c, err := client.Dial(deadline, a.Addr); err == nil {
			_, err = c.Health.Check(deadline, &agentpb.CheckRequest{})
			c.Close()
			if err == nil {
				return a, nil
			}
		}
		select {
		case <-deadline.Done():
			_ = a.Stop() // the Check timeout is the error to report
			return nil, fmt.Errorf("agent did not answer Check: %w", deadline.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

var cgroupParentFlag sync.Map // agent binary path -> bool

// knowsCgroupParent reports whether the agent binary has the
// --cgroup-parent flag; older binaries measured as a baseline may not.
func knowsCgroupParent(bin string) bool {
	if v, ok := cgroupParentFlag.Load(bin); ok {
		return v.(bool)
	}
	// The usage line lists every flag; the exit status of --help varies.
	out, _ := exec.Command(bin, "--help").CombinedOutput()
	known := strings.Contains(string(out), "--cgroup-parent")
	cgroupParentFlag.Store(bin, known)
	return known
}

// PID is the agent's process id.
func (a *AgentProc) PID() int { return a.Cmd.Process.Pid }

// Dial connects a client.
func (a *AgentProc) Dial(ctx context.Context) (*client.Client, error) {
	return client.Dial(ctx, a.Addr)
}

// Sample reads the agent's /proc figures.
func (a *AgentProc) Sample() (ProcSample, error) { return ReadProc(a.PID()) }

// Stop ends the agent with SIGTERM (SIGKILL after 10 s) and removes its
// cgroup parent.
func (a *AgentProc) Stop() error {
	if a.cgroupParent != "" {
		defer testbundle.RemoveCgroupParent(a.cgroupParent)
	}
	select {
	case <-a.exited:
		return nil
	default:
	}
	_ = a.Cmd.Process.Signal(syscall.SIGTERM) // fails only once it exited, which a.exited shows
	select {
	case <-a.exited:
	case <-time.After(10 * time.Second):
		_ = a.Cmd.Process.Kill() // as above
		<-a.exited
		return errors.New("agent ignored SIGTERM for 10 s; killed")
	}
	return nil
}
