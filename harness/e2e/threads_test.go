package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
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
	stopAtCleanup(t, v)
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
	console := bufio.NewScanner(conn)
	// No echo and no prompt, then one empty command to drain what the
	// shell printed before: from here on every line is a command's output.
	fmt.Fprintf(conn, "stty -echo; PS1=''\n")
	consoleRun(t, conn, console, "true")
	// One line per distinct namespace: "<threads> <namespace>", then the
	// shell's own namespace, which it took from the agent when started.
	out := consoleRun(t, conn, console, "for t in /proc/1/task/*; do readlink $t/ns/mnt; done | sort | uniq -c | sed 's/^ */NS /'; echo SELF $(readlink /proc/self/ns/mnt)")
	var per []string
	var self string
	for _, line := range out {
		switch {
		case strings.HasPrefix(line, "NS "):
			per = append(per, strings.TrimPrefix(line, "NS "))
		case strings.HasPrefix(line, "SELF "):
			self = strings.TrimPrefix(line, "SELF ")
		}
	}
	t.Logf("agent threads per mount namespace %q; the debug shell's %s", per, self)
	if len(per) != 1 || !strings.HasSuffix(per[0], " "+self) {
		t.Errorf("after %d containers the agent's threads are in %d mount namespaces %q; the agent's is %s", n, len(per), per, self)
	}
	record(t, "confinement", fmt.Sprintf("pod VM: mount namespaces of the agent's threads after %d containers", n), len(per))
	t.Run("Namespaces", func(t *testing.T) { p.checkNamespacesAgainstTheAgent(t, conn, console) })
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

// consoleRun runs cmd in the debug console's shell and returns the lines
// it printed.
func consoleRun(t *testing.T, conn net.Conn, sc *bufio.Scanner, cmd string) []string {
	t.Helper()
	const done = "__WREN_DONE__"
	fmt.Fprintf(conn, "%s; echo %s\n", cmd, done)
	var lines []string
	for sc.Scan() {
		line := strings.TrimSpace(strings.ReplaceAll(sc.Text(), "\r", ""))
		if line == done {
			return lines
		}
		lines = append(lines, line)
	}
	t.Fatalf("debug console ended before %q answered: %v", cmd, sc.Err())
	return nil
}

// nsKinds are the namespaces compared between containers and the agent.
var nsKinds = []string{"pid", "ipc", "uts", "net", "mnt"}

// checkNamespacesAgainstTheAgent starts three Kata-shaped containers, the
// first (the infra container), one asking for the sandbox's pid namespace
// and one not, and compares their namespaces with each other and with the
// agent's (PID 1, read through the debug console) as Kata's agent sets
// them: pid the infra container's for the sharer and a new one otherwise,
// ipc and uts the sandbox's (not the agent's), the network the pod VM's,
// and a mount namespace of its own each.
func (p *pod) checkNamespacesAgainstTheAgent(t *testing.T, conn net.Conn, sc *bufio.Scanner) {
	agent := map[string]string{}
	for i, line := range consoleRun(t, conn, sc, "for n in "+strings.Join(nsKinds, " ")+"; do readlink /proc/1/ns/$n; done") {
		if i < len(nsKinds) {
			agent[nsKinds[i]] = line
		}
	}
	ns := map[string]map[string]string{}
	for _, c := range []struct {
		id     string
		shared bool
	}{{"ns-infra", false}, {"ns-sharer", true}, {"ns-own", false}} {
		ct := p.newContainer(t, c.id, "/bin/sleep", "3600")
		if c.shared {
			// As a shim sends a container that shares the pod's pid
			// namespace: a path in the spec, turned into sandbox_pidns.
			ct.spec.Linux.Namespaces = append(ct.spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: "/proc/1/ns/pid"})
			ct.sandboxPidns = kata.ShapeSpec(ct.spec)
		}
		p.startContainer(t, ct)
		out := p.exec(t, c.id, "ns", false, nil, "/bin/sh", "-c", "for n in "+strings.Join(nsKinds, " ")+"; do readlink /proc/self/ns/$n; done")
		lines := strings.Fields(out.stdout)
		if len(lines) != len(nsKinds) {
			t.Fatalf("%s: namespaces %q", c.id, out.stdout)
		}
		ns[c.id] = map[string]string{}
		for i, k := range nsKinds {
			ns[c.id][k] = lines[i]
		}
	}
	infra, sharer, own := ns["ns-infra"], ns["ns-sharer"], ns["ns-own"]
	t.Logf("namespaces: agent %v\ninfra %v\nsharer %v\nown %v", agent, infra, sharer, own)
	check := func(what string, ok bool) {
		t.Helper()
		if !ok {
			t.Errorf("%s: agent %v, infra %v, sharer %v, own %v", what, agent, infra, sharer, own)
		}
	}
	check("sandbox_pidns shares the infra container's pid namespace", sharer["pid"] == infra["pid"])
	check("without sandbox_pidns a container gets a pid namespace of its own", own["pid"] != infra["pid"])
	check("no container is in the agent's pid namespace", infra["pid"] != agent["pid"] && own["pid"] != agent["pid"])
	for _, k := range []string{"ipc", "uts"} {
		check(k+" is the sandbox's, shared by every container", infra[k] == sharer[k] && infra[k] == own[k])
		check(k+" is not the agent's", infra[k] != agent[k])
	}
	check("the network is the pod VM's", infra["net"] == agent["net"] && own["net"] == agent["net"])
	check("each container has a mount namespace of its own", infra["mnt"] != agent["mnt"] && infra["mnt"] != own["mnt"] && sharer["mnt"] != own["mnt"])
	record(t, "confinement", "pod VM: Kata-shaped containers' namespaces as Kata's agent sets them (pid, ipc, uts, net, mnt)", !t.Failed())
}
