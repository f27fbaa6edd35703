package initramfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wren-vm/wren/agent/config"
	"github.com/wren-vm/wren/agent/policy/kataref"
	"github.com/wren-vm/wren/harness/testagent"
)

// TestPolicyInImage: the agent built with the policy engine gets its
// default policy at the path the agent reads (--policy, else Kata's
// allow-all); the default agent gets none, and refuses a --policy it
// would ignore.
func TestPolicyInImage(t *testing.T) {
	if PolicyPath != config.DefaultPolicyFile {
		t.Fatalf("PolicyPath %s, the agent reads %s", PolicyPath, config.DefaultPolicyFile)
	}
	withEngine := testagent.Binary(t, "wren-agent-policy")
	without := testagent.Binary(t, "wren-agent")
	own := filepath.Join(t.TempDir(), "own.rego")
	if err := os.WriteFile(own, []byte("package agent_policy\ndefault SetPolicyRequest := true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, init, policy, want string
	}{
		{"policy build, no --policy", withEngine, "", kataref.AllowAll},
		{"policy build, --policy", withEngine, own, "package agent_policy\ndefault SetPolicyRequest := true\n"},
		{"default build", without, "", ""},
	} {
		_, recs := readBack(t, build(t, Options{Init: c.init, Policy: c.policy}))
		got, ok := recs[strings.TrimPrefix(PolicyPath, "/")]
		if !ok {
			got, ok = recs[PolicyPath]
		}
		switch {
		case c.want == "" && ok:
			t.Errorf("%s: a policy in the image of an agent without the engine", c.name)
		case c.want != "" && (!ok || string(got.data) != c.want):
			t.Errorf("%s: policy in the image %q (present %v), want %.60q", c.name, got.data, ok, c.want)
		case ok && got.h.Perm&0o777 != 0o644:
			t.Errorf("%s: policy mode %o", c.name, got.h.Perm)
		}
	}
	err := Build(new(strings.Builder), Options{Init: without, Policy: own})
	if err == nil || !strings.Contains(err.Error(), "has no policy engine") {
		t.Errorf("--policy for the default agent: %v", err)
	}
}
