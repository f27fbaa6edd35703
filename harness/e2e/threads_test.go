package e2e

import (
	"bufio"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/harness/kata"
	"github.com/wren-vm/wren/harness/vm"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// TestAgentThreadsInPodVM runs many containers in a pod VM, then reads,
// through the debug console, the mount namespace of every thread of the
// agent (PID 1). libcontainer enters each container's mount namespace on a
// locked thread while starting it; the agent's main thread must never be
// that thread, or it stays there for good and /proc/1/mountinfo shows a
// container's mounts (RemoveContainer then finds bundles "still mounted").
func TestAgentThreadsInPodVM(t *testing.T) {
	requireVM(t)
	bins := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	work := t.TempDir()
	art, err := vm.BuildArtifacts(ctx, filepath.Join(bins, "wren-agent"), filepath.Join(work, "boot"), true, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := vm.Start(ctx, vm.Config{
		Dir: filepath.Join(work, "vm"), Kernel: art.Kernel, Initrd: art.Initrd, Debug: true,
		Vsockd: filepath.Join(bins, "wren-vsockd"), BootTimeout: 4 * time.Minute, Progress: testLog{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log tail:\n%s", vm.Tail(v.AgentLog, 40))
		}
		if err := v.Stop(); err != nil {
			t.Errorf("stop VM: %v", err)
		}
	})
	c, err := client.Dial(ctx, v.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := &pod{t: t, vm: v, c: c, kernel: art.KernelVersion}
	if _, err := c.Agent.CreateSandbox(ctx, &agentpb.CreateSandboxRequest{Hostname: "threads", SandboxId: "threads", Storages: []*agentpb.Storage{kata.SharedStorage()}}); err != nil {
		t.Fatal(err)
	}
	// Containers come four at a time, as a pod's do, with an exec each:
	// the agent's goroutines then move between more threads.
	const n, parallel = 16, 4
	cts := make([]*container, n)
	for i := range cts {
		cts[i] = p.newContainer(t, fmt.Sprintf("t%d", i), "/bin/sleep", "60")
	}
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for w := 0; w < parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += parallel {
				errs <- p.cycle(ctx, cts[i])
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	conn, err := client.DialHybridVsock(ctx, v.HybridVsock(), vm.DebugConsolePort)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(2 * time.Minute)); err != nil {
		t.Fatal(err)
	}
	// One line per distinct namespace: "<threads> <namespace>", then the
	// shell's own namespace, which it took from the agent when started.
	fmt.Fprintf(conn, "stty -echo; for t in /proc/1/task/*; do readlink $t/ns/mnt; done | sort | uniq -c | sed 's/^ */NS /'; echo SELF $(readlink /proc/self/ns/mnt); echo DONE\n")
	var per []string
	var self string
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		line := strings.TrimSpace(strings.ReplaceAll(sc.Text(), "\r", ""))
		switch {
		case strings.HasPrefix(line, "NS "):
			per = append(per, strings.TrimPrefix(line, "NS "))
		case strings.HasPrefix(line, "SELF "):
			self = strings.TrimPrefix(line, "SELF ")
		case line == "DONE":
			goto read
		}
	}
	t.Fatalf("debug console ended before the answer: %v", sc.Err())
read:
	t.Logf("agent threads per mount namespace %q; the debug shell's %s", per, self)
	if len(per) != 1 || !strings.HasSuffix(per[0], " "+self) {
		t.Errorf("after %d containers the agent's threads are in %d mount namespaces %q; the agent's is %s", n, len(per), per, self)
	}
	record(t, "confinement", fmt.Sprintf("pod VM: mount namespaces of the agent's threads after %d containers", n), len(per))
	p.checkAgentAnswers(t)
}

// cycle creates and starts c, execs in it, then kills and removes it; it
// may run on several goroutines at once.
func (p *pod) cycle(ctx context.Context, c *container) error {
	a := p.c.Agent
	if _, err := a.CreateContainer(ctx, c.request()); err != nil {
		return fmt.Errorf("create %s: %w", c.id, err)
	}
	if _, err := a.StartContainer(ctx, &agentpb.StartContainerRequest{ContainerId: c.id}); err != nil {
		return fmt.Errorf("start %s: %w", c.id, err)
	}
	proc := ocispec.FromProcess(&specs.Process{Args: []string{"/bin/true"}, Env: []string{"PATH=/bin"}, Cwd: "/"})
	if _, err := a.ExecProcess(ctx, &agentpb.ExecProcessRequest{ContainerId: c.id, ExecId: "x", Process: proc}); err != nil {
		return fmt.Errorf("exec in %s: %w", c.id, err)
	}
	if _, err := a.WaitProcess(ctx, &agentpb.WaitProcessRequest{ContainerId: c.id, ExecId: "x"}); err != nil {
		return fmt.Errorf("wait exec in %s: %w", c.id, err)
	}
	if _, err := a.SignalProcess(ctx, &agentpb.SignalProcessRequest{ContainerId: c.id, ExecId: c.id, Signal: 9}); err != nil {
		return fmt.Errorf("kill %s: %w", c.id, err)
	}
	if _, err := a.WaitProcess(ctx, &agentpb.WaitProcessRequest{ContainerId: c.id, ExecId: c.id}); err != nil {
		return fmt.Errorf("wait %s: %w", c.id, err)
	}
	if _, err := a.RemoveContainer(ctx, &agentpb.RemoveContainerRequest{ContainerId: c.id, Timeout: 30}); err != nil {
		return fmt.Errorf("remove %s: %w", c.id, err)
	}
	return nil
}
