package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wren-vm/wren/agent/policy/kataref"
	"github.com/wren-vm/wren/harness/testagent"
)

// TestWrenctlSetPolicyFromFile: the agent with the policy engine, on this
// host, starts with the policy of --policy-file; `wrenctl SetPolicy FILE`
// replaces it only while the policy in force allows SetPolicyRequest, and
// text that is not Rego is refused without replacing anything.
func TestWrenctlSetPolicyFromFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	allowAll := write("allow-all.rego", kataref.AllowAll)
	strict := write("strict.rego", "package agent_policy\n\ndefault StartContainerRequest := false\ndefault SetPolicyRequest := false\ndefault GuestDetailsRequest := true\n")
	notRego := write("not.rego", "allow everything, please\n")

	a := testagent.StartWith(t, testagent.Options{Bin: "wren-agent-policy", Args: []string{"--policy-file", allowAll}})
	if _, errOut, code := wrenctl(t, "", "--addr", a.Addr, "SetPolicy", notRego); code != 1 || !strings.HasPrefix(errOut, "wrenctl: SetPolicy: InvalidArgument: policy: not Rego") {
		t.Fatalf("SetPolicy with no Rego: exit %d, %q", code, errOut)
	}
	if _, errOut, code := wrenctl(t, "", "--addr", a.Addr, "SetPolicy", strict); code != 0 {
		t.Fatalf("SetPolicy under allow-all: exit %d, %s", code, errOut)
	}
	_, errOut, code := wrenctl(t, "", "--addr", a.Addr, "StartContainer", `{"container_id":"c1"}`)
	if code != 1 || !strings.HasPrefix(errOut, "wrenctl: StartContainer: PermissionDenied: StartContainerRequest is blocked by policy") {
		t.Errorf("StartContainer under the strict policy: exit %d, %q", code, errOut)
	}
	if _, errOut, code := wrenctl(t, "", "--addr", a.Addr, "GetGuestDetails", `{}`); code != 0 {
		t.Errorf("GetGuestDetails under the strict policy: exit %d, %s", code, errOut)
	}
	_, errOut, code = wrenctl(t, "", "--addr", a.Addr, "SetPolicy", allowAll)
	if code != 1 || !strings.HasPrefix(errOut, "wrenctl: SetPolicy: PermissionDenied: SetPolicyRequest is blocked by policy") {
		t.Errorf("SetPolicy under a policy refusing it: exit %d, %q", code, errOut)
	}
	// Health is not gated, as in Kata: the host can still tell the agent
	// is up.
	if _, errOut, code := wrenctl(t, "", "--addr", a.Addr, "Check"); code != 0 {
		t.Errorf("Check: exit %d, %s", code, errOut)
	}
}

// TestPolicyAgentWithoutItsPolicyFile: an agent whose policy file is
// missing serves, refuses everything, and takes a policy from SetPolicy.
func TestPolicyAgentWithoutItsPolicyFile(t *testing.T) {
	a := testagent.StartWith(t, testagent.Options{Bin: "wren-agent-policy", Args: []string{"--policy-file", filepath.Join(t.TempDir(), "missing.rego")}})
	if _, _, code := wrenctl(t, "", "--addr", a.Addr, "GetGuestDetails", `{}`); code != 1 {
		t.Errorf("GetGuestDetails without a policy: exit %d, want refused", code)
	}
	p := filepath.Join(t.TempDir(), "allow-all.rego")
	if err := os.WriteFile(p, []byte(kataref.AllowAll), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := wrenctl(t, "", "--addr", a.Addr, "SetPolicy", p); code != 0 {
		t.Fatalf("SetPolicy: exit %d, %s", code, errOut)
	}
	if _, errOut, code := wrenctl(t, "", "--addr", a.Addr, "GetGuestDetails", `{}`); code != 0 {
		t.Errorf("GetGuestDetails under allow-all: exit %d, %s", code, errOut)
	}
	if !strings.Contains(a.Log(), "refusing every request but SetPolicy") {
		t.Errorf("the agent did not log why it refuses:\n%s", a.Log())
	}
}
