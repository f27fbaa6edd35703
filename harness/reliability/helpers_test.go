package reliability

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/harness/testagent"
	"github.com/wren-vm/wren/internal/testbundle"
	"github.com/wren-vm/wren/internal/testroot"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// record logs one figure for docs/reliability.md.
func record(t testing.TB, kind, name string, value any) {
	t.Helper()
	t.Logf("RELIABILITY kind=%s name=%s value=%v", kind, strings.ReplaceAll(name, " ", "_"), value)
}

var seq atomic.Int64

// pod is a running agent with a created sandbox.
type pod struct {
	t      *testing.T
	a      *testagent.Agent
	c      *client.Client
	rootfs string
	// cgParent is the agent's cgroup parent, which holds this pod's
	// container cgroups (other agents on the machine use others).
	cgParent string
}

func newPod(t *testing.T) *pod { t.Helper(); return newPodWith(t, nil) }

// newPodWith runs beforeSandbox (if any) between the agent's start and
// CreateSandbox.
func newPodWith(t *testing.T, beforeSandbox func(*testagent.Agent)) *pod {
	t.Helper()
	return newPodOpts(t, testagent.Options{}, beforeSandbox)
}

// newPodOpts starts the agent with opts (see testagent.Options.Shield).
func newPodOpts(t *testing.T, opts testagent.Options, beforeSandbox func(*testagent.Agent)) *pod {
	t.Helper()
	testroot.Require(t, "the agent's containers")
	p := &pod{t: t, rootfs: testbundle.Rootfs(t, filepath.Join(t.TempDir(), "rootfs"))}
	// The agent nests every container's cgroup below its parent, and
	// removes the parent when it stops.
	p.a = testagent.StartWith(t, opts)
	p.cgParent = p.a.CgroupParent
	p.c = p.a.Dial(t)
	if beforeSandbox != nil {
		beforeSandbox(p.a)
	}
	if _, err := p.c.Agent.CreateSandbox(ctx(t), &agentpb.CreateSandboxRequest{Hostname: "rel", SandboxId: "rel"}); err != nil {
		t.Fatalf("CreateSandbox: %v", err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = p.c.Agent.DestroySandbox(c, &agentpb.DestroySandboxRequest{})
	})
	return p
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func (p *pod) spec(args ...string) *specs.Spec {
	s := testbundle.Spec(p.rootfs, args...)
	s.Linux.CgroupsPath = fmt.Sprintf("/%s/c%d", p.cgParent, seq.Add(1))
	return s
}

func (p *pod) create(id string, s *specs.Spec) error {
	_, err := p.c.Agent.CreateContainer(ctx(p.t), &agentpb.CreateContainerRequest{ContainerId: id, OCI: ocispec.FromSpec(s)})
	return err
}

// run creates and starts a container.
func (p *pod) run(id string, s *specs.Spec) {
	p.t.Helper()
	if err := p.create(id, s); err != nil {
		p.t.Fatalf("CreateContainer %s: %v", id, err)
	}
	if _, err := p.c.Agent.StartContainer(ctx(p.t), &agentpb.StartContainerRequest{ContainerId: id}); err != nil {
		p.t.Fatalf("StartContainer %s: %v", id, err)
	}
}

// warmBaseline runs one container to completion and removes it, then
// returns the agent's usage: what the agent sets up once, on its first
// container (epoll instances, the reaper's descriptors), is not a leak.
func (p *pod) warmBaseline() usage {
	p.t.Helper()
	id := fmt.Sprintf("warm%d", seq.Add(1))
	p.run(id, p.spec("/bin/true"))
	if _, err := p.c.Agent.WaitProcess(ctx(p.t), &agentpb.WaitProcessRequest{ContainerId: id, ExecId: id}); err != nil {
		p.t.Fatalf("wait %s: %v", id, err)
	}
	if err := p.remove(id); err != nil {
		p.t.Fatalf("remove %s: %v", id, err)
	}
	return p.settle(p.usage())
}

func (p *pod) remove(id string) error {
	_, err := p.c.Agent.RemoveContainer(ctx(p.t), &agentpb.RemoveContainerRequest{ContainerId: id})
	return err
}

// output runs args to completion in container id (which must run) and
// returns stdout and the exit status.
func (p *pod) exec(id string, args ...string) (string, int32) {
	p.t.Helper()
	execID := fmt.Sprintf("x%d", seq.Add(1))
	proc := ocispec.FromProcess(p.spec(args...).Process)
	if _, err := p.c.Agent.ExecProcess(ctx(p.t), &agentpb.ExecProcessRequest{ContainerId: id, ExecId: execID, Process: proc}); err != nil {
		p.t.Fatalf("ExecProcess %v: %v", args, err)
	}
	// Small outputs wait in the pipe while we wait for the exit.
	w, err := p.c.Agent.WaitProcess(ctx(p.t), &agentpb.WaitProcessRequest{ContainerId: id, ExecId: execID})
	if err != nil {
		p.t.Fatalf("WaitProcess %v: %v", args, err)
	}
	out := p.drain(p.c.Agent.ReadStdout, id, execID)
	p.drain(p.c.Agent.ReadStderr, id, execID)
	return string(out), w.Status
}

// drain reads a stream of a process to its EOF (empty data).
func (p *pod) drain(read func(context.Context, *agentpb.ReadStreamRequest) (*agentpb.ReadStreamResponse, error), id, execID string) string {
	var out []byte
	for {
		rc, cancel := context.WithTimeout(ctx(p.t), 5*time.Second)
		r, err := read(rc, &agentpb.ReadStreamRequest{ContainerId: id, ExecId: execID, Len: 64 << 10})
		cancel()
		if err != nil || len(r.Data) == 0 {
			return string(out)
		}
		out = append(out, r.Data...)
	}
}

// threadSlack is the thread growth tolerated: the Go runtime keeps the
// threads it once needed (blocking syscalls) and never exits them, so a
// few more after load is not a leak; a leak grows with the cycle count.
const threadSlack = 3

// fdSlack is the descriptor excess tolerated against a fixed baseline:
// Go closes an os.Process's pidfd from a finalizer, so a failed start can
// hold one until the agent's next GC. A leak is per request and outgrows
// it across the matrix's rows and the cycles of the leak test.
const fdSlack = 2

// usage is what the agent process holds.
type usage struct {
	fds, threads, zombies, children, mounts, cgroups int
}

func (u usage) String() string {
	return fmt.Sprintf("fds=%d threads=%d children=%d zombies=%d mounts=%d cgroups=%d", u.fds, u.threads, u.children, u.zombies, u.mounts, u.cgroups)
}

func (p *pod) usage() usage {
	pid := p.a.Cmd.Process.Pid
	var u usage
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	u.fds = len(fds)
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	u.threads = len(tasks)
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, s := range stats {
		b, err := os.ReadFile(s)
		if err != nil {
			continue
		}
		str := string(b)
		f := strings.Fields(str[strings.LastIndexByte(str, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			u.children++
			if f[0] == "Z" {
				u.zombies++
			}
		}
	}
	mi, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], p.a.StateRoot) {
			u.mounts++
		}
	}
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + p.cgParent + "/*")
	for _, d := range dirs {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			u.cgroups++
		}
	}
	return u
}

// settle waits until the agent's usage is at most base (exits and closes
// are asynchronous) and returns the last reading.
func (p *pod) settle(base usage) usage {
	var u usage
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		u = p.usage()
		if (u.fds <= base.fds+fdSlack && u.threads <= base.threads+threadSlack && u.children <= base.children && u.zombies == 0 &&
			u.mounts <= base.mounts && u.cgroups <= base.cgroups) || time.Now().After(deadline) {
			return u
		}
	}
}

func (p *pod) checkBaseline(what string, base usage) {
	p.t.Helper()
	if u := p.settle(base); u.fds > base.fds+fdSlack || u.children > base.children || u.zombies > 0 || u.mounts > base.mounts || u.cgroups > base.cgroups || u.threads > base.threads+threadSlack {
		p.t.Errorf("%s: agent holds %v, baseline %v", what, u, base)
	}
}

// runToEnd creates, starts, waits for and removes container id, returning
// the first error; unlike run it may be called from several goroutines.
func (p *pod) runToEnd(id string, s *specs.Spec) error {
	c := ctx(p.t)
	if err := p.create(id, s); err != nil {
		return fmt.Errorf("CreateContainer %s: %w", id, err)
	}
	if _, err := p.c.Agent.StartContainer(c, &agentpb.StartContainerRequest{ContainerId: id}); err != nil {
		return fmt.Errorf("StartContainer %s: %w", id, err)
	}
	if _, err := p.c.Agent.WaitProcess(c, &agentpb.WaitProcessRequest{ContainerId: id, ExecId: id}); err != nil {
		return fmt.Errorf("WaitProcess %s: %w", id, err)
	}
	if err := p.remove(id); err != nil {
		return fmt.Errorf("RemoveContainer %s: %w", id, err)
	}
	return nil
}
