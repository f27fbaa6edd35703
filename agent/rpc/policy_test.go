package rpc

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wren-vm/wren/agent/policy"
	"github.com/wren-vm/wren/agent/policy/kataref"
	"github.com/wren-vm/wren/agent/policy/opa"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// servePolicy serves an Agent (no sandbox, no guest services) whose
// policy, enforced by the real OPA engine, is text.
func servePolicy(t *testing.T, text string) (agentpb.AgentServiceService, agentpb.HealthService) {
	t.Helper()
	p := policy.New(opa.Engine{}, policy.DefaultLimits, nil)
	if err := p.Load(context.Background(), text); err != nil {
		t.Fatal(err)
	}
	conn := serveConn(t, New(Options{Policy: p}))
	return agentpb.NewAgentServiceClient(conn), agentpb.NewHealthClient(conn)
}

// call calls method through the client c with req, or an empty request.
func call(c any, method string, req any) error {
	m := reflect.ValueOf(c).MethodByName(method)
	if req == nil {
		req = reflect.New(m.Type().In(1).Elem()).Interface()
	}
	out := m.Call([]reflect.Value{reflect.ValueOf(context.Background()), reflect.ValueOf(req)})
	err, _ := out[1].Interface().(error)
	return err
}

// requestNames maps each AgentService method to its request message's
// name, the policy's entry point (Kata: the request's descriptor name).
func requestNames() map[string]string {
	out := map[string]string{}
	methods := agentpb.File_wren_protocols_agent_proto.Services().ByName("AgentService").Methods()
	for i := range methods.Len() {
		m := methods.Get(i)
		out[string(m.Name())] = string(m.Input().Name())
	}
	return out
}

// denyAll defines every entry point false.
func denyAll() string {
	var b strings.Builder
	b.WriteString("package agent_policy\n")
	seen := map[string]bool{}
	for _, req := range requestNames() {
		if !seen[req] {
			seen[req] = true
			fmt.Fprintf(&b, "default %s := false\n", req)
		}
	}
	return b.String()
}

// TestDenyAllPolicyRefusesEveryGatedMethod: with a policy that refuses
// every request, each registered method (read from the service
// descriptors, not from a list here) is refused with PermissionDenied
// naming its request, except those Kata's agent does not check either
// (the mem-agent settings; grpc.Health), which still answer. A policy that
// defines nothing makes every gated method an internal error instead.
func TestDenyAllPolicyRefusesEveryGatedMethod(t *testing.T) {
	for _, tc := range []struct {
		name, policy string
		code         codes.Code
		msg          string
	}{
		{"deny-all", denyAll(), codes.PermissionDenied, "%s is blocked by policy: "},
		{"empty", "package agent_policy\n", codes.Internal, "policy check: %s: the policy defines no value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, hc := servePolicy(t, tc.policy)
			gatedN, uncheckedN := 0, 0
			for method, req := range requestNames() {
				err := call(c, method, nil)
				if uncheckedMethods[method] && method != "SetPolicy" {
					uncheckedN++
					if status.Code(err) == tc.code {
						t.Errorf("%s, which Kata leaves unchecked: %v", method, err)
					}
					continue
				}
				gatedN++
				want := fmt.Sprintf(tc.msg, req)
				if st, _ := status.FromError(err); st.Code() != tc.code || !strings.HasPrefix(st.Message(), want) {
					t.Errorf("%s: %v, want %v %q", method, err, tc.code, want)
				}
			}
			health := agentpb.File_wren_protocols_health_proto.Services().ByName("Health").Methods()
			for i := range health.Len() {
				uncheckedN++
				if err := call(hc, string(health.Get(i).Name()), nil); err != nil {
					t.Errorf("Health/%s: %v", health.Get(i).Name(), err)
				}
			}
			if gatedN+uncheckedN != 44 || uncheckedN != 4 {
				t.Errorf("%d gated and %d unchecked methods, want 40 and 4 of 44", gatedN, uncheckedN)
			}
		})
	}
}

// TestSetPolicyGatedByTheCurrentPolicy: SetPolicy replaces the policy only
// when the current one allows SetPolicyRequest; text that is not Rego, or
// does not compile, or is too large is InvalidArgument and the policy in
// force stays.
func TestSetPolicyGatedByTheCurrentPolicy(t *testing.T) {
	c, _ := servePolicy(t, kataref.AllowAll)
	ctx := context.Background()
	set := func(text string) error {
		_, err := c.SetPolicy(ctx, &agentpb.SetPolicyRequest{Policy: text})
		return err
	}
	passes := func(method string) bool {
		return status.Code(call(c, method, nil)) != codes.PermissionDenied
	}
	for name, text := range map[string]string{
		"not Rego":         "this is { not rego",
		"does not compile": "package agent_policy\ndefault CreateContainerRequest := no_such_rule\n",
		"another package":  "package other\ndefault SetPolicyRequest := true\n",
		"unsafe variable":  "package agent_policy\nCreateContainerRequest if { x }\n",
	} {
		if err := set(text); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if !passes("StartContainer") {
		t.Fatal("allow-all is no longer in force after refused policies")
	}
	// Allowed by allow-all: a policy that refuses StartContainer and
	// SetPolicy.
	if err := set("package agent_policy\ndefault StartContainerRequest := false\ndefault SetPolicyRequest := false\n"); err != nil {
		t.Fatal(err)
	}
	if passes("StartContainer") {
		t.Error("StartContainer passes the new policy")
	}
	err := set(kataref.AllowAll)
	if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied || !strings.HasPrefix(st.Message(), "SetPolicyRequest is blocked by policy") {
		t.Fatalf("SetPolicy under a policy that refuses it: %v", err)
	}
	if passes("StartContainer") {
		t.Error("a refused SetPolicy replaced the policy")
	}
}

// TestSetPolicyWithoutEngineIsUnimplemented: the default build has no
// policy: nothing is checked and SetPolicy says so.
func TestSetPolicyWithoutEngineIsUnimplemented(t *testing.T) {
	c := serve(t, New(Options{}))
	_, err := c.SetPolicy(context.Background(), &agentpb.SetPolicyRequest{Policy: kataref.AllowAll})
	if st, _ := status.FromError(err); st.Code() != codes.Unimplemented || !strings.Contains(st.Message(), "/grpc.AgentService/SetPolicy ") {
		t.Errorf("%v, want Unimplemented", err)
	}
}
