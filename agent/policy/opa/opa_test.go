package opa

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/agent/policy"
	"github.com/wren-vm/wren/agent/policy/kataref"
	"github.com/wren-vm/wren/protocols/agentpb"
)

func load(t *testing.T, limits policy.Limits, text string) *policy.Policy {
	t.Helper()
	p := policy.New(Engine{}, limits, nil)
	if err := p.Load(context.Background(), text); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDenialCarriesThePolicysPrints(t *testing.T) {
	p := load(t, policy.DefaultLimits, `package agent_policy
default StartContainerRequest := false
StartContainerRequest if {
	print("checking", input.container_id)
	input.container_id == "good"
}
`)
	ctx := context.Background()
	if err := p.Check(ctx, &agentpb.StartContainerRequest{ContainerId: "good"}); err != nil {
		t.Fatal(err)
	}
	err := p.Check(ctx, &agentpb.StartContainerRequest{ContainerId: "bad"})
	if !errors.Is(err, errdefs.ErrPermissionDenied) || err.Error() != "StartContainerRequest is blocked by policy: checking bad" {
		t.Errorf("%v", err)
	}
}

// TestObjectAnswerOpsUpdateState: an answer {"allowed": true, "ops": [...]}
// applies its JSON patch to data.pstate, as genpolicy's rules expect.
func TestObjectAnswerOpsUpdateState(t *testing.T) {
	p := load(t, policy.DefaultLimits, `package agent_policy
default CreateContainerRequest := {"allowed": false}
CreateContainerRequest := {"allowed": true, "ops": [{"op": "add", "path": "/pstate/first", "value": input.container_id}]} if {
	not data.pstate.first
}
CreateContainerRequest := {"allowed": true} if {
	data.pstate.first == input.container_id
}
`)
	ctx := context.Background()
	for i, c := range []struct {
		id      string
		allowed bool
	}{{"c1", true}, {"c1", true}, {"c2", false}} {
		err := p.Check(ctx, &agentpb.CreateContainerRequest{ContainerId: c.id})
		if (err == nil) != c.allowed {
			t.Errorf("%d %s: %v, want allowed=%v", i, c.id, err, c.allowed)
		}
	}
}

func TestAllowRequestsFailingPolicy(t *testing.T) {
	p := load(t, policy.DefaultLimits, "package agent_policy\ndefault AllowRequestsFailingPolicy := true\ndefault StartContainerRequest := false\n")
	ctx := context.Background()
	if err := p.Check(ctx, &agentpb.StartContainerRequest{}); err != nil {
		t.Errorf("refused request: %v, want allowed (AllowRequestsFailingPolicy)", err)
	}
	if err := p.Check(ctx, &agentpb.RemoveContainerRequest{}); err != nil {
		t.Errorf("undefined request: %v, want allowed (AllowRequestsFailingPolicy)", err)
	}
}

// TestEvaluationIsBoundedInTime: a policy that iterates for minutes is cut
// off at the limit with an internal error; the policy keeps answering.
func TestEvaluationIsBoundedInTime(t *testing.T) {
	p := load(t, policy.Limits{EvalTimeout: 300 * time.Millisecond}, `package agent_policy
default GuestDetailsRequest := true
StartContainerRequest if {
	n := count([x | some i in numbers.range(1, 100000); some j in numbers.range(1, 100000); x := i * j])
	n > 0
}
`)
	ctx := context.Background()
	err := p.Check(ctx, &agentpb.StartContainerRequest{})
	if err == nil || errdefs.KindOf(err) != nil || !strings.Contains(err.Error(), "ran out of time") {
		t.Errorf("%v, want an internal error: out of time", err)
	}
	if err := p.Check(ctx, &agentpb.GuestDetailsRequest{}); err != nil {
		t.Errorf("after the cut-off: %v", err)
	}
}

// TestCompileOutOfTimeIsNotInvalidArgument: a compile cut off by its time
// limit is DeadlineExceeded (the text may be fine) and leaves the policy in
// force; the limit is its own, not the per-request one.
func TestCompileOutOfTimeIsNotInvalidArgument(t *testing.T) {
	p := load(t, policy.Limits{EvalTimeout: time.Minute}, kataref.AllowAll)
	slow := policy.New(Engine{}, policy.Limits{EvalTimeout: time.Minute, CompileTimeout: time.Nanosecond}, nil)
	err := slow.Load(context.Background(), kataref.AllowAll)
	if !errors.Is(err, errdefs.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "compiling ran out of time") {
		t.Errorf("%v, want DeadlineExceeded", err)
	}
	if err := slow.Check(context.Background(), &agentpb.GuestDetailsRequest{}); !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Errorf("after a failed load: %v, want the closed default (PermissionDenied)", err)
	}
	if err := p.Set(context.Background(), &agentpb.SetPolicyRequest{Policy: kataref.AllowAll}); err != nil {
		t.Errorf("the default compile limit refused allow-all: %v", err)
	}
}

func TestPolicySizeBounded(t *testing.T) {
	p := load(t, policy.Limits{MaxBytes: 4096}, kataref.AllowAll)
	ctx := context.Background()
	big := "package agent_policy\ndefault SetPolicyRequest := false\n" + strings.Repeat("# padding\n", 1000)
	err := p.Set(ctx, &agentpb.SetPolicyRequest{Policy: big})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "exceeds the limit of 4096") {
		t.Errorf("%v, want InvalidArgument", err)
	}
	if err := p.Check(ctx, &agentpb.SetPolicyRequest{}); err != nil {
		t.Errorf("allow-all is no longer in force: %v", err)
	}
}

// TestRegoSyntaxes: Rego v0 (Kata's files), v1, and regorus's leniency
// about a blank before a call's parenthesis, which genpolicy's rules need.
func TestRegoSyntaxes(t *testing.T) {
	for name, text := range map[string]string{
		"v0":           "package agent_policy\nGuestDetailsRequest { input.mem_block_size == true }\n",
		"v1":           "package agent_policy\nGuestDetailsRequest if input.mem_block_size == true\n",
		"call blank":   "package agent_policy\nGuestDetailsRequest {\n  print (\"keep (this) string\") # a comment (too)\n  input.mem_block_size == true\n}\n",
		"future.every": "package agent_policy\nimport future.keywords.every\nGuestDetailsRequest { every x in [1] { x == 1 }; input.mem_block_size }\n",
	} {
		p := load(t, policy.DefaultLimits, text)
		if err := p.Check(context.Background(), &agentpb.GuestDetailsRequest{MemBlockSize: true}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if got := joinCallParens(`x := f (1); print ("a (b)") # g (h)` + "\nnot (y)"); got != `x := f(1); print("a (b)") # g (h)`+"\nnot (y)" {
		t.Errorf("joinCallParens: %q", got)
	}
}

// TestFromFile: the agent's start-up policy; one that does not load leaves
// only SetPolicy open.
func TestFromFile(t *testing.T) {
	ctx := context.Background()
	good := t.TempDir() + "/allow-all.rego"
	if err := os.WriteFile(good, []byte(kataref.AllowAll), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := t.TempDir() + "/bad.rego"
	if err := os.WriteFile(bad, []byte("package agent_policy\nx := y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := policy.FromFile(ctx, Engine{}, policy.DefaultLimits, nil, good)
	if err != nil || p.Check(ctx, &agentpb.StartContainerRequest{}) != nil {
		t.Fatalf("allow-all from a file: %v", err)
	}
	for _, name := range []string{bad, t.TempDir() + "/missing.rego"} {
		p, err := policy.FromFile(ctx, Engine{}, policy.DefaultLimits, nil, name)
		if err == nil {
			t.Errorf("%s: no error", name)
		}
		// Undefined in the closed policy: refused as an internal error, as
		// Kata's closed-door baseline refuses it.
		if err := p.Check(ctx, &agentpb.StartContainerRequest{}); err == nil {
			t.Errorf("%s: StartContainer allowed", name)
		}
		if err := p.Check(ctx, &agentpb.SetPolicyRequest{}); err != nil {
			t.Errorf("%s: SetPolicy %v, want allowed", name, err)
		}
	}
}
