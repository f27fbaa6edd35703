// Package e2e drives the real agent inside a real pod VM (QEMU TCG, Debian's
// kernel or Wren's own from make kernel, x86_64 or arm64, the Wren
// initramfs) over hybrid vsock, the way a Kata shim does.
// One VM is booted and shared by the subtests of TestPodVM: a TCG boot costs
// many seconds on the CI machines.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/harness/kata"
	"github.com/wren-vm/wren/harness/vm"
	"github.com/wren-vm/wren/internal/testbundle"
	"github.com/wren-vm/wren/protocols/agentpb"
)

const (
	podHostname = "wren-e2e-pod"
	podDNS      = "nameserver 192.0.2.53"
	// rpcTimeout bounds one RPC; TCG guests are slow, not stuck.
	rpcTimeout = 2 * time.Minute
)

// pod is the booted VM and a connection to its agent.
type pod struct {
	t      *testing.T
	vm     *vm.VM
	c      *client.Client
	kernel string // the guest's uname -r
	// busybox is the static busybox of the guest's architecture that
	// container root filesystems get ("" for the host's).
	busybox string
	goarch  string // the guest's GOARCH ("" for the host's)
}

func TestPodVM(t *testing.T) {
	requireVM(t)
	// Beside TestPodVMClone: each guest is one TCG thread.
	t.Parallel()
	v, art := startPodVM(t, vm.ArtifactOptions{}, true)
	runPodCases(t, v, art.KernelVersion)
}

// TestPodVMWrenKernel runs the TestPodVM cases on make kernel's kernel
// (out/vmlinux-wren: everything built in, an initramfs without modules),
// and checks that the agent loaded no modules.
func TestPodVMWrenKernel(t *testing.T) {
	requireVM(t)
	t.Parallel()
	v, art := startPodVM(t, vm.ArtifactOptions{Kernel: vm.KernelWren}, true)
	runPodCasesFor(t, v, art.KernelVersion, podCases{noModules: true})
}

// startPodVM builds the boot files o asks for (the agent, when o names
// none, is wren-agent for its architecture) and boots the pod VM the
// TestPodVM cases run against, with the test's DAX image attached when
// daxImage is set. The VM outlives the call: runPodCasesFor stops it.
func startPodVM(t *testing.T, o vm.ArtifactOptions, daxImage bool) (*vm.VM, *vm.Artifacts) {
	t.Helper()
	bins := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	work := t.TempDir()
	if o.Agent == "" {
		o.Agent = filepath.Join(bins, "wren-agent")
		if o.Arch == vm.ArchARM64 {
			o.Agent += "-arm64"
		}
	}
	o.Dir = filepath.Join(work, "boot")
	art, err := vm.BuildArtifactsFor(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	img := ""
	if daxImage {
		img = filepath.Join(work, "dax.img")
		buildDAXImage(t, img)
	}
	cfg := podConfig(t, bins, art, img, filepath.Join(work, "vm"))
	cfg.Arch = o.Arch
	v, err := vm.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v, art
}

// podConfig is the pod VM the TestPodVM cases run against, booted cold or
// made into a template.
func podConfig(t *testing.T, bins string, art *vm.Artifacts, img, dir string) vm.Config {
	return vm.Config{
		Dir: dir, Kernel: art.Kernel, Initrd: art.Initrd, RootImage: art.RootImage, Image: img,
		MemoryMiB: 768, Vsockd: filepath.Join(bins, "wren-vsockd"),
		BootTimeout: 4 * time.Minute, Progress: testLog{t},
	}
}

// runPodCases runs the TestPodVM cases against a running pod VM and stops
// it at the end.
func runPodCases(t *testing.T, v *vm.VM, kernel string) { runPodCasesFor(t, v, kernel, podCases{}) }

// podCases is what differs in the pod cases between guests.
type podCases struct {
	busybox, goarch string // the guest's, when not the host's (pod)
	// noModules adds the check that the agent loaded no kernel modules
	// (a kernel with everything built in).
	noModules bool
	// daxRootAgent, for a guest booted from a DAX root image, is the agent
	// binary in that image: the DAXRoot case checks it is not in guest RAM.
	daxRootAgent string
	// skip names the cases that do not run on this guest, with why.
	skip map[string]string
}

// stopAtCleanup stops v when t ends, with the console's and the agent's
// log tails if t failed, and checks that nothing of the VM still runs.
func stopAtCleanup(t *testing.T, v *vm.VM) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("console tail:\n%s", vm.Tail(v.Console, 60))
			t.Logf("agent log tail:\n%s", vm.Tail(v.AgentLog, 40))
		}
		if err := v.Stop(); err != nil {
			t.Errorf("stop VM: %v", err)
		}
		if v.Running() {
			t.Error("QEMU still runs after Stop")
		}
		if l := processesMentioning(v.Dir); len(l) > 0 {
			t.Errorf("left running after Stop:\n%s", strings.Join(l, "\n"))
		}
	})
}

// runPodCasesFor is runPodCases for a guest that differs from the host.
func runPodCasesFor(t *testing.T, v *vm.VM, kernel string, pc podCases) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	stopAtCleanup(t, v)
	t.Logf("agent answered %v after QEMU started", v.Booted)
	c, err := client.Dial(ctx, v.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := &pod{t: t, vm: v, c: c, kernel: kernel, busybox: pc.busybox, goarch: pc.goarch}
	run := func(name string, f func(*testing.T)) bool {
		if why, ok := pc.skip[name]; ok {
			t.Logf("%s does not run on this guest: %s", name, why)
			return true
		}
		return t.Run(name, f)
	}

	run("Check", p.testCheck)
	run("GuestDetails", p.testGuestDetails)
	run("ListInterfacesAndRoutes", p.testListInterfacesAndRoutes)
	if !run("CreateSandbox", p.testCreateSandbox) {
		t.Fatal("no sandbox: the container tests cannot run")
	}
	if pc.daxRootAgent != "" {
		// First: the later cases fill the page cache.
		run("DAXRoot", func(t *testing.T) { p.testDAXRoot(t, pc.daxRootAgent) })
	}
	run("RunFromSharedDir", p.testRunFromSharedDir)
	run("HostnameAndDNS", p.testHostnameAndDNS)
	run("StdinRoundTrip", p.testStdinRoundTrip)
	run("LargeOutput", p.testLargeOutput)
	run("Exec", p.testExec)
	run("ExecTTY", p.testExecTTY)
	run("KataShapedPIDNamespace", p.testKataPIDNamespace)
	run("StringUser", p.testStringUser)
	run("GuestHooks", p.testGuestHooks)
	run("Conformance", p.testConformance)
	run("SharedMounts", p.testSharedMounts)
	run("BlockRootfs", p.testBlockRootfs)
	run("Devices", p.testDevices)
	run("Passfd", p.testPassfd)
	run("ContainerCannotReachAgent", p.testContainerCannotReachAgent)
	run("OOM", p.testOOM)
	run("BlockHotplug", p.testBlockHotplug)
	run("DAXImage", p.testDAX)
	run("Logs", p.testLogs)
	if pc.noModules {
		run("NoModules", p.testNoModules)
	}

	run("DestroySandboxPowersOff", p.testDestroy)
}

// testNoModules: with every module built in, the image has no load list
// and the agent loads nothing at boot.
func (p *pod) testNoModules(t *testing.T) {
	log := vm.Tail(p.vm.AgentLog, 100000)
	if !strings.Contains(log, "no kernel module list") {
		t.Errorf("the agent did not report booting without a module list:\n%s", vm.Tail(p.vm.AgentLog, 20))
	}
	if strings.Contains(log, "kernel modules loaded") {
		t.Error("the agent loaded modules on a kernel that has them built in")
	}
}

func (p *pod) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), rpcTimeout)
}

// unwrap finds the status error inside a wrapped error.
func unwrap(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if _, ok := status.FromError(e); ok {
			return e
		}
	}
	return err
}

func (p *pod) testCheck(t *testing.T) {
	ctx, cancel := p.ctx()
	defer cancel()
	resp, err := p.c.Health.Check(ctx, &agentpb.CheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != agentpb.HealthCheckResponse_SERVING {
		t.Errorf("status %v", resp.Status)
	}
	ver, err := p.c.Health.Version(ctx, &agentpb.CheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ver.AgentVersion == "" || ver.GrpcVersion == "" {
		t.Errorf("version %v", ver)
	}
}

func (p *pod) testGuestDetails(t *testing.T) {
	ctx, cancel := p.ctx()
	defer cancel()
	resp, err := p.c.Agent.GetGuestDetails(ctx, &agentpb.GuestDetailsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	d := resp.GetAgentDetails()
	if d == nil || !d.InitDaemon {
		t.Errorf("agent details %v: want init_daemon true (the agent is PID 1)", d)
	}
	for _, want := range []string{"virtio-fs", "blk", "nvdimm"} {
		if !contains(d.GetStorageHandlers(), want) {
			t.Errorf("storage handlers %v lack %s", d.GetStorageHandlers(), want)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (p *pod) testCreateSandbox(t *testing.T) {
	ctx, cancel := p.ctx()
	defer cancel()
	// A kernel module the guest does not have: NotFound, and no sandbox,
	// so the CreateSandbox below starts from a clean slate.
	_, err := p.c.Agent.CreateSandbox(ctx, &agentpb.CreateSandboxRequest{
		Hostname: podHostname, SandboxId: "e2e-pod",
		KernelModules: []*agentpb.KernelModule{{Name: "wren_no_such_module", Parameters: []string{"x=1"}}},
	})
	if status.Code(unwrap(err)) != codes.NotFound {
		t.Errorf("CreateSandbox with a missing kernel module: %v, want NotFound", err)
	}
	_, err = p.c.Agent.CreateSandbox(ctx, &agentpb.CreateSandboxRequest{
		Hostname:  podHostname,
		Dns:       []string{podDNS},
		Storages:  []*agentpb.Storage{kata.SharedStorage()},
		SandboxId: "e2e-pod",
		// Loaded from the guest's module tree by the agent itself (the
		// guest has no modprobe); already loaded at boot is no error.
		KernelModules: []*agentpb.KernelModule{{Name: "virtio_blk"}},
		// OCI hooks for every container, from the share (GuestHooks).
		GuestHookPath: p.installGuestHooks(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	// A second CreateSandbox is refused with the right code.
	_, err = p.c.Agent.CreateSandbox(ctx, &agentpb.CreateSandboxRequest{Hostname: "x", SandboxId: "again"})
	if status.Code(unwrap(err)) != codes.AlreadyExists {
		t.Errorf("second CreateSandbox: %v, want AlreadyExists", err)
	}
}

// container is one container of the pod, its root filesystem written into
// the host side of the share.
type container struct {
	id   string
	spec *specs.Spec
	// sandboxPidns is what a Kata shim sends for the spec's pid namespace.
	sandboxPidns bool
	// stringUser, when set, names the init's user (Kata's string_user).
	stringUser *agentpb.StringUser
	// sharedMounts are Kata's shared_mounts sent with the container.
	sharedMounts []*agentpb.SharedMount
}

// newContainer lays out a busybox rootfs in SHARED/<id>/rootfs and a spec
// whose root is that directory as the guest sees it through virtio-fs,
// shaped as a Kata shim sends it (kata.ShapeSpec: no pid, network or
// cgroup namespace in the spec).
func (p *pod) newContainer(t *testing.T, id string, args ...string) *container {
	t.Helper()
	testbundle.RootfsWith(t, kata.HostRootfs(p.vm.SharedDir, id), p.busybox)
	spec := testbundle.Spec(kata.GuestRootfs(id), args...)
	spec.Hostname = ""
	spec.Linux.CgroupsPath = "/e2e/" + id
	shared := kata.ShapeSpec(spec)
	return &container{id: id, spec: spec, sandboxPidns: shared}
}

// request is the CreateContainer request a Kata shim sends for c.
func (c *container) request(storages ...*agentpb.Storage) *agentpb.CreateContainerRequest {
	return &agentpb.CreateContainerRequest{
		ContainerId: c.id, ExecId: c.id, OCI: ocispec.FromSpec(c.spec), Storages: storages, SandboxPidns: c.sandboxPidns,
		StringUser: c.stringUser, SharedMounts: c.sharedMounts,
	}
}

// output is what a process printed and how it ended.
type output struct {
	stdout, stderr string
	code           int32
}

// run creates, starts and waits for a container, feeding stdin (when not
// nil) and collecting its output, then removes it.
func (p *pod) run(t *testing.T, c *container, stdin []byte, storages ...*agentpb.Storage) output {
	t.Helper()
	ctx, cancel := p.ctx()
	defer cancel()
	_, err := p.c.Agent.CreateContainer(ctx, c.request(storages...))
	if err != nil {
		t.Fatalf("CreateContainer %s: %v", c.id, err)
	}
	defer func() {
		rctx, rcancel := p.ctx()
		defer rcancel()
		if _, err := p.c.Agent.RemoveContainer(rctx, &agentpb.RemoveContainerRequest{ContainerId: c.id, Timeout: 30}); err != nil {
			t.Errorf("RemoveContainer %s: %v", c.id, err)
		}
	}()
	stdout := p.reader(ctx, c.id, c.id, p.c.Agent.ReadStdout)
	stderr := p.reader(ctx, c.id, c.id, p.c.Agent.ReadStderr)
	if _, err := p.c.Agent.StartContainer(ctx, &agentpb.StartContainerRequest{ContainerId: c.id}); err != nil {
		t.Fatalf("StartContainer %s: %v", c.id, err)
	}
	if stdin != nil {
		p.writeStdin(t, ctx, c.id, c.id, stdin)
	}
	w, err := p.c.Agent.WaitProcess(ctx, &agentpb.WaitProcessRequest{ContainerId: c.id, ExecId: c.id})
	if err != nil {
		t.Fatalf("WaitProcess %s: %v", c.id, err)
	}
	return output{stdout: <-stdout, stderr: <-stderr, code: w.Status}
}

// reader collects one output stream until the agent reports EOF (empty
// data) or an error.
func (p *pod) reader(ctx context.Context, cid, execID string, read func(context.Context, *agentpb.ReadStreamRequest) (*agentpb.ReadStreamResponse, error)) <-chan string {
	ch := make(chan string, 1)
	go func() {
		var b bytes.Buffer
		for {
			resp, err := read(ctx, &agentpb.ReadStreamRequest{ContainerId: cid, ExecId: execID, Len: 32 << 10})
			if err != nil || len(resp.Data) == 0 {
				break
			}
			b.Write(resp.Data)
		}
		ch <- b.String()
	}()
	return ch
}

func (p *pod) writeStdin(t *testing.T, ctx context.Context, cid, execID string, data []byte) {
	t.Helper()
	for len(data) > 0 {
		resp, err := p.c.Agent.WriteStdin(ctx, &agentpb.WriteStreamRequest{ContainerId: cid, ExecId: execID, Data: data})
		if err != nil {
			t.Fatalf("WriteStdin: %v", err)
		}
		if resp.Len == 0 {
			t.Fatal("WriteStdin wrote nothing")
		}
		data = data[resp.Len:]
	}
	if _, err := p.c.Agent.CloseStdin(ctx, &agentpb.CloseStdinRequest{ContainerId: cid, ExecId: execID}); err != nil {
		t.Fatalf("CloseStdin: %v", err)
	}
}

func (p *pod) testRunFromSharedDir(t *testing.T) {
	c := p.newContainer(t, "hello", "/bin/sh", "-c", "echo hello from the pod VM; uname -r; echo oops >&2; exit 3")
	out := p.run(t, c, nil)
	want := "hello from the pod VM\n" + p.kernel + "\n"
	if out.stdout != want {
		t.Errorf("stdout %q, want %q", out.stdout, want)
	}
	if out.stderr != "oops\n" {
		t.Errorf("stderr %q", out.stderr)
	}
	if out.code != 3 {
		t.Errorf("exit status %d, want 3", out.code)
	}
}

func (p *pod) testHostnameAndDNS(t *testing.T) {
	c := p.newContainer(t, "names", "/bin/sh", "-c", "hostname; cat /etc/resolv.conf")
	out := p.run(t, c, nil)
	lines := strings.SplitN(out.stdout, "\n", 2)
	if lines[0] != podHostname {
		t.Errorf("hostname %q, want %q (output %q)", lines[0], podHostname, out.stdout)
	}
	if len(lines) < 2 || !strings.Contains(lines[1], podDNS) {
		t.Errorf("resolv.conf lacks %q: %q", podDNS, out.stdout)
	}
}

func (p *pod) testStdinRoundTrip(t *testing.T) {
	// 256 KiB crosses many vsock packets and agent reads in both directions.
	in := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog 0123456789\n"), 256<<10/55)
	c := p.newContainer(t, "stdin", "/bin/sh", "-c", "tr a-z A-Z")
	out := p.run(t, c, in)
	if want := strings.ToUpper(string(in)); out.stdout != want {
		t.Errorf("stdout: %d bytes, want %d (first difference near %d)", len(out.stdout), len(want), firstDiff(out.stdout, want))
	}
	if out.code != 0 {
		t.Errorf("exit status %d", out.code)
	}
}

// testLargeOutput: megabytes of output cross vsock whole and in order; the
// agent splices reads of 16 KiB and more from the pipe into the vsock
// socket (replysplice).
func (p *pod) testLargeOutput(t *testing.T) {
	const lines = 200000
	var want strings.Builder
	for i := 1; i <= lines; i++ {
		fmt.Fprintf(&want, "%d\n", i)
	}
	c := p.newContainer(t, "seq", "/bin/seq", "1", fmt.Sprint(lines))
	out := p.run(t, c, nil)
	if out.stdout != want.String() {
		t.Errorf("stdout: %d bytes, want %d (first difference near %d)", len(out.stdout), want.Len(), firstDiff(out.stdout, want.String()))
	}
	if out.code != 0 {
		t.Errorf("exit status %d", out.code)
	}
}

func firstDiff(a, b string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// startIdle starts a container that waits for exec'd processes.
func (p *pod) startIdle(t *testing.T, id string) {
	t.Helper()
	p.startContainer(t, p.newContainer(t, id, "/bin/sleep", "3600"))
}

// startContainer creates and starts c, and kills and removes it when the
// test ends.
func (p *pod) startContainer(t *testing.T, c *container) {
	t.Helper()
	id := c.id
	ctx, cancel := p.ctx()
	defer cancel()
	if _, err := p.c.Agent.CreateContainer(ctx, c.request()); err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := p.ctx()
		defer cancel()
		// The process may have exited already.
		_, _ = p.c.Agent.SignalProcess(ctx, &agentpb.SignalProcessRequest{ContainerId: id, ExecId: id, Signal: 9})
		if _, err := p.c.Agent.RemoveContainer(ctx, &agentpb.RemoveContainerRequest{ContainerId: id, Timeout: 30}); err != nil {
			t.Errorf("RemoveContainer %s: %v", id, err)
		}
	})
	if _, err := p.c.Agent.StartContainer(ctx, &agentpb.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
}

func (p *pod) exec(t *testing.T, cid, execID string, tty bool, stdin []byte, args ...string) output {
	t.Helper()
	ctx, cancel := p.ctx()
	defer cancel()
	proc := &specs.Process{Terminal: tty, Args: args, Env: []string{"PATH=/bin", "TERM=dumb"}, Cwd: "/"}
	if tty {
		proc.ConsoleSize = &specs.Box{Height: 24, Width: 80}
	}
	_, err := p.c.Agent.ExecProcess(ctx, &agentpb.ExecProcessRequest{ContainerId: cid, ExecId: execID, Process: ocispec.FromProcess(proc)})
	if err != nil {
		t.Fatalf("ExecProcess: %v", err)
	}
	stdout := p.reader(ctx, cid, execID, p.c.Agent.ReadStdout)
	var stderr <-chan string
	if tty {
		none := make(chan string, 1)
		none <- "" // a terminal has one output stream
		stderr = none
	} else {
		stderr = p.reader(ctx, cid, execID, p.c.Agent.ReadStderr)
	}
	if stdin != nil {
		p.writeStdin(t, ctx, cid, execID, stdin)
	}
	w, err := p.c.Agent.WaitProcess(ctx, &agentpb.WaitProcessRequest{ContainerId: cid, ExecId: execID})
	if err != nil {
		t.Fatalf("WaitProcess: %v", err)
	}
	return output{stdout: <-stdout, stderr: <-stderr, code: w.Status}
}

func (p *pod) testExec(t *testing.T) {
	p.startIdle(t, "execbox")
	out := p.exec(t, "execbox", "e1", false, nil, "/bin/sh", "-c", "echo out; echo err >&2; test -t 0 || echo notty; exit 7")
	if out.stdout != "out\nnotty\n" || out.stderr != "err\n" || out.code != 7 {
		t.Errorf("exec: %+v", out)
	}
	out = p.exec(t, "execbox", "e2", false, []byte("ping\n"), "/bin/sh", "-c", "read l; echo got:$l")
	if out.stdout != "got:ping\n" {
		t.Errorf("exec with stdin: %+v", out)
	}
	// The exec'd process shares the container's PID namespace with sleep.
	out = p.exec(t, "execbox", "e3", false, nil, "/bin/sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '")
	if !strings.Contains(out.stdout, "sleep 3600") {
		t.Errorf("exec not in the container: PID 1 is %q", out.stdout)
	}
}

func (p *pod) testExecTTY(t *testing.T) {
	p.startIdle(t, "ttybox")
	out := p.exec(t, "ttybox", "t1", true, []byte("hi\n"), "/bin/sh", "-c", "test -t 0 && echo tty; stty size; read l; echo got:$l; exit 4")
	s := strings.ReplaceAll(out.stdout, "\r\n", "\n")
	for _, want := range []string{"tty\n", "24 80\n", "got:hi\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("tty output %q lacks %q", s, want)
		}
	}
	if out.code != 4 {
		t.Errorf("exit status %d, want 4", out.code)
	}
}

func (p *pod) testOOM(t *testing.T) {
	c := p.newContainer(t, "oom", "/bin/sh", "-c", "x=a; while true; do x=$x$x; done")
	limit := int64(32 << 20)
	swap := limit
	c.spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &swap}}
	events := make(chan string, 1)
	errs := make(chan error, 1)
	ctx, cancel := p.ctx()
	defer cancel()
	go func() {
		ev, err := p.c.Agent.GetOOMEvent(ctx, &agentpb.GetOOMEventRequest{})
		if err != nil {
			errs <- err
			return
		}
		events <- ev.ContainerId
	}()
	out := p.run(t, c, nil)
	if out.code != 137 {
		t.Errorf("exit status %d, want 137 (SIGKILL by the OOM killer)", out.code)
	}
	select {
	case id := <-events:
		if id != c.id {
			t.Errorf("GetOOMEvent: container %q, want %q", id, c.id)
		}
	case err := <-errs:
		t.Fatalf("GetOOMEvent: %v", err)
	case <-ctx.Done():
		t.Fatal("no OOM event")
	}
}

// mountedContainer runs cat on a file of a storage the container gets
// bind-mounted at /data.
func (p *pod) catFromStorage(t *testing.T, id, file string, st *agentpb.Storage) output {
	t.Helper()
	c := p.newContainer(t, id, "/bin/sh", "-c", "cat /data/"+file+"; grep ' /data ' /proc/mounts")
	c.spec.Mounts = append(c.spec.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: st.MountPoint, Options: []string{"rbind", "ro"}})
	return p.run(t, c, nil, st)
}

func (p *pod) testBlockHotplug(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "disk.ext4")
	buildExt4(t, disk)
	ctx, cancel := p.ctx()
	defer cancel()
	q, err := p.vm.QMPDial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	pciPath, err := p.vm.HotplugBlock(ctx, q, "e2edisk", disk, true)
	if err != nil {
		t.Fatal(err)
	}
	var pci []any
	if err := q.Execute(ctx, "query-pci", nil, &pci); err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(pci); !strings.Contains(string(b), `"qdev_id":"e2edisk"`) {
		t.Errorf("query-pci does not list the hot-plugged disk")
	}
	st := &agentpb.Storage{Driver: "blk", Source: pciPath, Fstype: "ext4", Options: []string{"ro"}, MountPoint: "/run/kata-containers/sandbox/storage/wren-e2e-blk"}
	out := p.catFromStorage(t, "blkreader", "hello.txt", st)
	if !strings.HasPrefix(out.stdout, blkToken) {
		t.Errorf("read %q from the disk at PCI path %s, want %q", out.stdout, pciPath, blkToken)
	}
}

func (p *pod) testDAX(t *testing.T) {
	st := &agentpb.Storage{Driver: "nvdimm", Source: "/dev/pmem0p1", Fstype: "ext4", Options: []string{"dax", "ro"}, MountPoint: "/run/kata-containers/sandbox/storage/wren-e2e-dax"}
	out := p.catFromStorage(t, "daxreader", "wren-e2e.txt", st)
	if !strings.HasPrefix(out.stdout, daxToken) {
		t.Fatalf("read %q from the DAX image, want %q (stderr %q)", out.stdout, daxToken, out.stderr)
	}
	mount := strings.TrimPrefix(out.stdout, daxToken)
	if !strings.Contains(mount, "dax") {
		t.Errorf("the image is not mounted with dax: %q", mount)
	}
}

// logRecords parses JSON log lines (anything before '{' is skipped, such as
// a console prefix).
func logRecords(text string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(text, "\n") {
		i := strings.Index(line, `{"time"`)
		if i < 0 {
			continue
		}
		var rec map[string]any
		if json.Unmarshal([]byte(line[i:]), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

func (p *pod) testLogs(t *testing.T) {
	recs := logRecords(p.vm.AgentLogText())
	var listening map[string]any
	for _, r := range recs {
		if r["msg"] == "listening" {
			listening = r
		}
		if r["level"] == "ERROR" {
			t.Errorf("agent error record on vsock %d: %v", vm.LogPort, r)
		}
	}
	if listening == nil {
		t.Fatalf("no \"listening\" record among %d records on vsock %d", len(recs), vm.LogPort)
	}
	if ms, ok := listening["init_ms"].(float64); !ok || ms <= 0 {
		t.Errorf("listening record without init_ms: %v", listening)
	} else {
		t.Logf("agent init time (its own log): %.0f ms", ms)
	}
	for _, r := range logRecords(p.vm.ConsoleText()) {
		if r["level"] == "ERROR" {
			t.Errorf("agent error record on the console: %v", r)
		}
	}
}

func (p *pod) testDestroy(t *testing.T) {
	ctx, cancel := p.ctx()
	defer cancel()
	_, err := p.c.Agent.DestroySandbox(ctx, &agentpb.DestroySandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), time.Minute)
	defer wcancel()
	if err := p.vm.Wait(wctx); err != nil {
		t.Fatalf("QEMU did not exit by itself after DestroySandbox: %v", err)
	}
	if c := p.vm.ConsoleText(); !strings.Contains(c, "powering off") {
		t.Errorf("console does not say why the VM powered off:\n%s", vm.Tail(p.vm.Console, 10))
	}
}
