package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wren-vm/wren/agent/policy/kataref"
	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/harness/kata"
	"github.com/wren-vm/wren/harness/testagent"
	"github.com/wren-vm/wren/harness/vm"
	"github.com/wren-vm/wren/internal/testbundle"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// TestPolicyPodVM boots a pod VM with the agent built with the policy
// engine (make agent-policy) and the image's default policy, Kata's
// allow-all (rootfs-builder with no --policy), then sets genpolicy's
// rules with a policy data section for one Kubernetes pod container and
// sends that container's CreateContainer as Kata's runtime does: it runs;
// the same request with another command line, an added mount or a
// privileged container is refused, as Kata's agent refuses it. One VM of
// its own (the agent of TestPodVM has no policy engine).
func TestPolicyPodVM(t *testing.T) {
	requireVM(t)
	bins := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	work := t.TempDir()
	art, err := vm.BuildArtifacts(ctx, testagent.Binary(t, "wren-agent-policy"), filepath.Join(work, "boot"), false, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := vm.Start(ctx, vm.Config{
		Dir: filepath.Join(work, "vm"), Kernel: art.Kernel, Initrd: art.Initrd,
		MemoryMiB: 512, Vsockd: filepath.Join(bins, "wren-vsockd"),
		BootTimeout: 4 * time.Minute, Progress: testLog{t},
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

	rctx, rcancel := p.ctx()
	defer rcancel()
	if _, err := c.Agent.CreateSandbox(rctx, &agentpb.CreateSandboxRequest{
		Hostname: kata.PodSandboxName, SandboxId: kata.PodSandboxID, Storages: []*agentpb.Storage{kata.SharedStorage()},
	}); err != nil {
		t.Fatal(err)
	}
	if !t.Run("AllowAll", p.testAllowAll) {
		t.FailNow()
	}
	if _, err := c.Agent.SetPolicy(rctx, &agentpb.SetPolicyRequest{Policy: kata.GenpolicyPolicy()}); err != nil {
		t.Fatalf("SetPolicy genpolicy's rules under allow-all: %v", err)
	}
	t.Run("GenpolicyAllows", p.testGenpolicyAllows)
	t.Run("GenpolicyRefuses", p.testGenpolicyRefuses)
	t.Run("SetPolicyRefused", func(t *testing.T) {
		_, err := c.Agent.SetPolicy(rctx, &agentpb.SetPolicyRequest{Policy: kataref.AllowAll})
		wantDenied(t, err, "SetPolicyRequest")
	})
}

func wantDenied(t *testing.T, err error, req string) {
	t.Helper()
	st, _ := status.FromError(unwrap(err))
	if st.Code() != codes.PermissionDenied || !strings.HasPrefix(st.Message(), req+" is blocked by policy: ") {
		t.Errorf("%v, want PermissionDenied %q", err, req+" is blocked by policy: ...")
	}
}

// testAllowAll: under allow-all a container with any command line runs,
// with its output read back (ReadStdout is allowed too).
func (p *pod) testAllowAll(t *testing.T) {
	c := p.newContainer(t, "anything", "/bin/sh", "-c", "echo allowed by allow-all")
	if out := p.run(t, c, nil); out.stdout != "allowed by allow-all\n" || out.code != 0 {
		t.Errorf("output %q, status %d", out.stdout, out.code)
	}
}

// policyContainer lays out the rootfs of the container genpolicy's policy
// data describes and returns its CreateContainer request, edited by edit.
func (p *pod) policyContainer(t *testing.T, name string, edit func(*specs.Spec)) *agentpb.CreateContainerRequest {
	t.Helper()
	testbundle.Rootfs(t, kata.HostRootfs(p.vm.SharedDir, name))
	spec := testbundle.Spec(kata.GuestRootfs(name), kata.PodContainerArgs...)
	spec.Linux.CgroupsPath = "/e2e/" + name
	if edit != nil {
		edit(spec)
	}
	return kata.PodContainerRequest(name, name, spec)
}

// testGenpolicyAllows: the container the policy data describes runs (its
// command writes a file into its rootfs, which the host reads through the
// share: genpolicy's defaults refuse ReadStdout).
func (p *pod) testGenpolicyAllows(t *testing.T) {
	ctx, cancel := p.ctx()
	defer cancel()
	req := p.policyContainer(t, "allowed", nil)
	if _, err := p.c.Agent.CreateContainer(ctx, req); err != nil {
		t.Fatalf("CreateContainer the policy describes: %v", err)
	}
	if _, err := p.c.Agent.StartContainer(ctx, &agentpb.StartContainerRequest{ContainerId: "allowed"}); err != nil {
		t.Fatal(err)
	}
	w, err := p.c.Agent.WaitProcess(ctx, &agentpb.WaitProcessRequest{ContainerId: "allowed", ExecId: "allowed"})
	if err != nil || w.Status != 0 {
		t.Fatalf("WaitProcess: %v, status %v", err, w)
	}
	_, err = p.c.Agent.ReadStdout(ctx, &agentpb.ReadStreamRequest{ContainerId: "allowed", ExecId: "allowed", Len: 1024})
	wantDenied(t, err, "ReadStreamRequest")
	if _, err := p.c.Agent.RemoveContainer(ctx, &agentpb.RemoveContainerRequest{ContainerId: "allowed"}); err != nil {
		t.Fatal(err)
	}
	ran, err := os.ReadFile(filepath.Join(kata.HostRootfs(p.vm.SharedDir, "allowed"), "ran"))
	if err != nil || string(ran) != "allowed by policy\n" {
		t.Errorf("the container's output file: %q, %v", ran, err)
	}
}

// testGenpolicyRefuses: the same request, changed as a hostile host would
// change it, is refused before anything is created; the id stays free.
func (p *pod) testGenpolicyRefuses(t *testing.T) {
	for name, edit := range map[string]func(*specs.Spec){
		"cmdline": func(s *specs.Spec) { s.Process.Args = []string{"sh", "-c", "cat /proc/1/environ >/ran"} },
		"mount": func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/shared", Type: "bind", Source: kata.GuestSharedDir, Options: []string{"rbind", "rw"}})
		},
		"privileged": func(s *specs.Spec) {
			caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN", "CAP_SYS_MODULE"}
			s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}
			s.Linux.MaskedPaths, s.Linux.ReadonlyPaths = nil, nil
		},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := p.ctx()
			defer cancel()
			_, err := p.c.Agent.CreateContainer(ctx, p.policyContainer(t, "refused-"+name, edit))
			wantDenied(t, err, "CreateContainerRequest")
			_, err = p.c.Agent.StartContainer(ctx, &agentpb.StartContainerRequest{ContainerId: "refused-" + name})
			if status.Code(unwrap(err)) != codes.NotFound {
				t.Errorf("StartContainer of the refused container: %v, want NotFound (never created)", err)
			}
		})
	}
}
