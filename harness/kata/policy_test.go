package kata

import (
	"context"
	"errors"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/agent/policy"
	"github.com/wren-vm/wren/agent/policy/kataref"
	"github.com/wren-vm/wren/agent/policy/opa"
	"github.com/wren-vm/wren/internal/testbundle"
	"github.com/wren-vm/wren/protocols/agentpb"
)

func loadPolicy(t *testing.T, text string) *policy.Policy {
	t.Helper()
	p := policy.New(opa.Engine{}, policy.DefaultLimits, nil)
	if err := p.Load(context.Background(), text); err != nil {
		t.Fatal(err)
	}
	return p
}

// podRequest is PodContainerRequest for the policy's container, changed by
// edit first.
func podRequest(edit func(*specs.Spec)) *agentpb.CreateContainerRequest {
	spec := testbundle.Spec(GuestRootfs("c1-0123456789"), PodContainerArgs...)
	spec.Linux.CgroupsPath = "/pod/c1"
	if edit != nil {
		edit(spec)
	}
	return PodContainerRequest("c1", "c1-0123456789", spec)
}

// TestGenpolicyRulesAllowOnlyThePolicysContainer evaluates genpolicy's
// rules.rego with a policy data section for a Kata-shaped CreateContainer:
// the request the data describes passes; a changed command line, an added
// mount or a privileged container is refused with the policy's prints.
func TestGenpolicyRulesAllowOnlyThePolicysContainer(t *testing.T) {
	p := loadPolicy(t, GenpolicyPolicy())
	ctx := context.Background()
	if err := p.Check(ctx, podRequest(nil)); err != nil {
		t.Fatalf("the policy's own container: %v", err)
	}
	// Twice: the first allowed request recorded the sandbox name in the
	// policy's state; the same name passes again.
	if err := p.Check(ctx, podRequest(nil)); err != nil {
		t.Fatalf("the policy's own container, again: %v", err)
	}
	refused := map[string]func(*specs.Spec){
		"changed command line": func(s *specs.Spec) { s.Process.Args = []string{"sh", "-c", "cat /etc/shadow"} },
		"added mount": func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/host", Type: "bind", Source: "/", Options: []string{"rbind", "rw"}})
		},
		"privileged": func(s *specs.Spec) {
			// What a privileged pod container looks like to the agent:
			// every capability, nothing masked or read-only.
			caps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_NET_ADMIN", "CAP_KILL"}
			s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}
			s.Linux.MaskedPaths, s.Linux.ReadonlyPaths = nil, nil
		},
		"other sandbox name": func(s *specs.Spec) {},
	}
	for name, edit := range refused {
		t.Run(name, func(t *testing.T) {
			req := podRequest(edit)
			if name == "other sandbox name" {
				req.OCI.Annotations["io.kubernetes.cri.sandbox-name"] = "intruder"
			}
			err := p.Check(ctx, req)
			if !errors.Is(err, errdefs.ErrPermissionDenied) || !strings.HasPrefix(err.Error(), "CreateContainerRequest is blocked by policy: ") {
				t.Fatalf("%v, want PermissionDenied", err)
			}
			if !strings.Contains(err.Error(), "allow_create_container_input: true") {
				t.Errorf("the denial does not carry the policy's prints: %.300s", err)
			}
		})
	}
}

// TestGenpolicyRulesOtherRequests: requests genpolicy's rules allow or
// refuse by their defaults and request_defaults.
func TestGenpolicyRulesOtherRequests(t *testing.T) {
	p := loadPolicy(t, GenpolicyPolicy())
	ctx := context.Background()
	cases := []struct {
		req     proto.Message
		allowed bool
	}{
		{&agentpb.CreateSandboxRequest{Hostname: "h", SandboxId: "s", Storages: []*agentpb.Storage{SharedStorage()}}, true},
		{&agentpb.CreateSandboxRequest{SandboxId: "s", Storages: []*agentpb.Storage{SharedStorage()}, KernelModules: []*agentpb.KernelModule{{Name: "evil"}}}, false},
		{&agentpb.CreateSandboxRequest{SandboxId: "s", Storages: []*agentpb.Storage{{Driver: "local", Source: "/", MountPoint: "/x"}}}, false},
		{&agentpb.StartContainerRequest{ContainerId: "c1"}, true},
		{&agentpb.WaitProcessRequest{ContainerId: "c1"}, true},
		{&agentpb.ReadStreamRequest{ContainerId: "c1"}, false}, // request_defaults.ReadStreamRequest
		{&agentpb.ExecProcessRequest{ContainerId: "c1", Process: ocispec.FromSpec(testbundle.Spec("/", "sh")).Process}, false},
		{&agentpb.SetPolicyRequest{Policy: kataref.AllowAll}, false},
		{&agentpb.CopyFileRequest{Path: "/run/kata-containers/shared/containers/" + strings.Repeat("a", 64) + "-0123456789abcdef-hostname", FileMode: 0o100644}, true},
		{&agentpb.CopyFileRequest{Path: "/etc/passwd", FileMode: 0o100644}, false},
	}
	for _, c := range cases {
		err := p.Check(ctx, c.req)
		switch {
		case c.allowed && err != nil:
			t.Errorf("%T %v: %v, want allowed", c.req, c.req, err)
		case !c.allowed && !errors.Is(err, errdefs.ErrPermissionDenied):
			t.Errorf("%T %v: %v, want PermissionDenied", c.req, c.req, err)
		}
	}
}

// TestAllowAllAllowsTheSameRequests: Kata's allow-all policy allows the
// requests the rules refuse, and leaves undefined what it does not list
// (an internal error, as in Kata).
func TestAllowAllAllowsTheSameRequests(t *testing.T) {
	p := loadPolicy(t, kataref.AllowAll)
	ctx := context.Background()
	for _, req := range []proto.Message{
		podRequest(func(s *specs.Spec) { s.Process.Args = []string{"anything"} }),
		&agentpb.ReadStreamRequest{}, &agentpb.SetPolicyRequest{Policy: "x"},
		&agentpb.CreateSandboxRequest{KernelModules: []*agentpb.KernelModule{{Name: "m"}}},
	} {
		if err := p.Check(ctx, req); err != nil {
			t.Errorf("%T: %v", req, err)
		}
	}
	err := p.Check(ctx, &agentpb.GetIPTablesRequest{})
	if err == nil || errdefs.KindOf(err) != nil || !strings.Contains(err.Error(), "defines no value for data.agent_policy.GetIPTablesRequest") {
		t.Errorf("GetIPTables under allow-all: %v, want an internal error (undefined)", err)
	}
}

// BenchmarkGenpolicyCreateContainer: one allowed CreateContainer checked
// by genpolicy's rules (the policy's evaluation alone; make bench's figure
// P measures it in the agent).
func BenchmarkGenpolicyCreateContainer(b *testing.B) {
	p := policy.New(opa.Engine{}, policy.DefaultLimits, nil)
	if err := p.Load(context.Background(), GenpolicyPolicy()); err != nil {
		b.Fatal(err)
	}
	req := podRequest(nil)
	for b.Loop() {
		if err := p.Check(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}
