package reliability

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/harness/kata"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// TestKataShapedContainerGetsOwnPIDNamespace creates containers as Kata's
// shim sends them (the pid namespace taken out of the spec, sandbox_pidns
// telling whether to share the sandbox's) and checks where each runs: a
// container that does not ask to share gets a pid namespace of its own,
// one that asks shares the first container's, and none shares the agent's.
func TestKataShapedContainerGetsOwnPIDNamespace(t *testing.T) {
	p := newPod(t)
	agentNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", p.a.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	create := func(id string, sandboxPidns bool) error {
		s := p.spec("/bin/sleep", "1000")
		// A Kata shim tells the agent to share the sandbox's namespace by
		// a path in the spec that it then removes.
		shared := kata.StripPIDNamespace(s)
		if shared {
			t.Fatalf("%s: runc's default spec asks for a new pid namespace, not a path", id)
		}
		_, err := p.c.Agent.CreateContainer(ctx(t), &agentpb.CreateContainerRequest{ContainerId: id, OCI: ocispec.FromSpec(s), SandboxPidns: sandboxPidns})
		return err
	}
	// No container runs yet, so there is no sandbox pid namespace to join.
	if err := create("early", true); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("sandbox_pidns before any container: %v, want FailedPrecondition", err)
	}
	if _, err := os.Stat(filepath.Join(p.a.StateRoot, "early")); !os.IsNotExist(err) {
		t.Errorf("the refused container left its bundle: %v", err)
	}

	nsOf := func(id string) string {
		t.Helper()
		out, code := p.exec(id, "/bin/sh", "-c", "echo $$ $(readlink /proc/self/ns/pid)")
		if code != 0 {
			t.Fatalf("exec in %s: exit %d", id, code)
		}
		return strings.TrimSpace(out)
	}
	for _, c := range []struct {
		id     string
		shared bool
	}{{"infra", false}, {"own", false}, {"sharer", true}} {
		if err := create(c.id, c.shared); err != nil {
			t.Fatalf("CreateContainer %s: %v", c.id, err)
		}
		if _, err := p.c.Agent.StartContainer(ctx(t), &agentpb.StartContainerRequest{ContainerId: c.id}); err != nil {
			t.Fatalf("StartContainer %s: %v", c.id, err)
		}
	}
	infra, own, sharer := nsField(nsOf("infra")), nsField(nsOf("own")), nsField(nsOf("sharer"))
	for id, ns := range map[string]string{"infra": infra, "own": own, "sharer": sharer} {
		if ns == agentNS {
			t.Errorf("%s runs in the agent's pid namespace %s", id, ns)
		}
	}
	if own == infra {
		t.Errorf("a container that did not ask to share runs in the sandbox's pid namespace %s", own)
	}
	if sharer != infra {
		t.Errorf("sandbox_pidns: container in %s, the sandbox's (first container's) is %s", sharer, infra)
	}
	out, _ := p.exec("own", "/bin/sh", "-c", "echo $$; cat /proc/[0-9]*/comm | grep -c '^sleep$'")
	record(t, "confinement", "Kata-shaped spec: an exec's pid and the sleep processes it sees", strings.Join(strings.Fields(out), " "))
	if f := strings.Fields(out); len(f) != 2 || f[1] != "1" {
		t.Errorf("a Kata-shaped container sees %q sleep processes (want its own 1)", out)
	}
}

// nsField picks the pid namespace out of nsOf's "pid ns count" line.
func nsField(line string) string {
	f := strings.Fields(line)
	if len(f) < 2 {
		return line
	}
	return f[1]
}
