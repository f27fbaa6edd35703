package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/harness/testagent"
	"github.com/wren-vm/wren/internal/testbundle"
	"github.com/wren-vm/wren/internal/testroot"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// writeBundle lays out a busybox bundle the way `runc spec` users do: a
// rootfs directory and a config.json naming it relatively.
func writeBundle(t *testing.T, args ...string) string {
	t.Helper()
	testroot.Require(t, "running containers")
	dir := t.TempDir()
	testbundle.Rootfs(t, filepath.Join(dir, "rootfs"))
	spec := testbundle.Spec("rootfs", args...)
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestWrenctlRunEndToEnd(t *testing.T) {
	bundle := writeBundle(t, "/bin/sh", "-c", "echo out:$(hostname); read line; echo in:$line; echo err >&2; exit 3")
	a := testagent.Start(t)
	out, errOut, code := wrenctl(t, "from-stdin\n", "--addr", a.Addr, "run", "--bundle", bundle, "c1")
	if code != 3 {
		t.Errorf("exit code %d, want 3 (stderr %q)", code, errOut)
	}
	if out != "out:wren-test\nin:from-stdin\n" {
		t.Errorf("stdout %q", out)
	}
	if errOut != "err\n" {
		t.Errorf("stderr %q", errOut)
	}
	// run removed the container: the id is free again, and a large output
	// arrives whole through ttrpc (the 64 MiB case runs without ttrpc in
	// package container, to keep this suite fast on 2 cores).
	bundle2 := writeBundle(t, "/bin/sh", "-c", "head -c 16777216 /dev/urandom > /tmp/d; sha256sum /tmp/d >&2; cat /tmp/d")
	out, errOut, code = wrenctl(t, "", "--addr", a.Addr, "run", "--bundle", bundle2, "c1")
	if code != 0 {
		t.Fatalf("second run: exit %d: %s", code, errOut)
	}
	sum := fmt.Sprintf("%x", sha256.Sum256([]byte(out)))
	if len(out) != 16<<20 || !strings.HasPrefix(errOut, sum) {
		t.Errorf("16 MiB run: got %d bytes, sha256 %s; container says %q", len(out), sum, errOut)
	}
}

// The agent's log is one JSON stream, libcontainer's lines included: the
// init of a container with the spec Debian's `runc spec` writes (the
// README's scripts/busybox-bundle.sh) warns through logrus, on every
// start, that it cannot raise the ambient capabilities the spec lists.
// (The cgroup parent is this process's own: testagent's default, named
// after the temp dir's "001", is shared by every test process here.)
func TestAgentLogIsJSON(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running containers needs root")
	}
	bundle := filepath.Join(t.TempDir(), "bundle")
	if out, err := exec.Command("../../../scripts/busybox-bundle.sh", bundle, "echo hi").CombinedOutput(); err != nil {
		t.Fatalf("busybox-bundle.sh: %v\n%s", err, out)
	}
	a := testagent.Start(t, "--cgroup-parent", fmt.Sprintf("wren-test-json-%d", os.Getpid()))
	if out, errOut, code := wrenctl(t, "", "--addr", a.Addr, "run", "--bundle", bundle, "c1"); code != 0 || out != "hi\n" {
		t.Fatalf("run: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(a.Log()), "\n")
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Errorf("agent log line is not JSON: %q", l)
		}
	}
	if !strings.Contains(a.Log(), `"source":"libcontainer"`) {
		t.Errorf("no line from libcontainer in the log (did its init stop warning?):\n%s", a.Log())
	}
}

func TestWrenctlExecEndToEnd(t *testing.T) {
	bundle := writeBundle(t, "/bin/sleep", "1000")
	a := testagent.Start(t)
	if _, errOut, code := wrenctl(t, "", "--addr", a.Addr, "run", "--detach", "--bundle", bundle, "svc"); code != 0 {
		t.Fatalf("run --detach: exit %d: %s", code, errOut)
	}
	out, errOut, code := wrenctl(t, "", "--addr", a.Addr, "exec", "svc", "/bin/sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; exit 4")
	if code != 4 || out != "/bin/sleep 1000 \n" {
		t.Errorf("exec: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, errOut, code = wrenctl(t, "hello\n", "--addr", a.Addr, "exec", "--tty", "svc", "/bin/sh", "-c", "test -t 0 && echo tty; read l; echo got:$l")
	if code != 0 || !strings.Contains(out, "tty") || !strings.Contains(out, "got:hello") {
		t.Errorf("exec --tty: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, errOut, code := wrenctl(t, "", "--addr", a.Addr, "exec", "nosuch", "/bin/true"); code != 1 || !strings.Contains(errOut, "NotFound") {
		t.Errorf("exec into unknown container: exit %d, stderr %q", code, errOut)
	}
	if _, errOut, code := wrenctl(t, "", "--addr", a.Addr, "RemoveContainer", `{"container_id":"svc"}`); code != 0 {
		t.Errorf("RemoveContainer: exit %d: %s", code, errOut)
	}
	if _, errOut, code := wrenctl(t, "", "--addr", a.Addr, "DestroySandbox"); code != 0 {
		t.Errorf("DestroySandbox: exit %d: %s", code, errOut)
	}
}

// While container A's WaitProcess and ReadStdout block in the agent, the
// same connection serves Health.Check and a whole run of container B.
func TestAgentServesOthersWhileOneBlocks(t *testing.T) {
	bundleA := writeBundle(t, "/bin/sleep", "1000")
	bundleB := writeBundle(t, "/bin/sh", "-c", "echo b")
	a := testagent.Start(t)
	c := a.Dial(t)
	ctx := context.Background()
	if _, err := c.Agent.CreateSandbox(ctx, &agentpb.CreateSandboxRequest{Hostname: "pod"}); err != nil {
		t.Fatal(err)
	}
	create := func(id, bundle string) {
		t.Helper()
		spec, err := loadBundle(bundle)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Agent.CreateContainer(ctx, &agentpb.CreateContainerRequest{ContainerId: id, ExecId: id, OCI: ocispec.FromSpec(spec)}); err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
		if _, err := c.Agent.StartContainer(ctx, &agentpb.StartContainerRequest{ContainerId: id}); err != nil {
			t.Fatalf("start %s: %v", id, err)
		}
	}
	create("a1", bundleA)
	blocked := make(chan string, 2)
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_, err := c.Agent.WaitProcess(bctx, &agentpb.WaitProcessRequest{ContainerId: "a1"})
		blocked <- fmt.Sprint("WaitProcess returned: ", err)
	}()
	go func() {
		_, err := c.Agent.ReadStdout(bctx, &agentpb.ReadStreamRequest{ContainerId: "a1", Len: 100})
		blocked <- fmt.Sprint("ReadStdout returned: ", err)
	}()
	hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
	defer hcancel()
	if _, err := c.Health.Check(hctx, &agentpb.CheckRequest{}); err != nil {
		t.Fatalf("Health.Check while A blocks: %v", err)
	}
	create("b1", bundleB)
	resp, err := c.Agent.ReadStdout(hctx, &agentpb.ReadStreamRequest{ContainerId: "b1", Len: 100})
	if err != nil || string(resp.Data) != "b\n" {
		t.Fatalf("B output %q: %v", resp.GetData(), err)
	}
	if w, err := c.Agent.WaitProcess(hctx, &agentpb.WaitProcessRequest{ContainerId: "b1"}); err != nil || w.Status != 0 {
		t.Fatalf("B wait: %v %v", w, err)
	}
	select {
	case msg := <-blocked:
		t.Fatalf("A's call ended early: %s", msg)
	default:
	}
	if _, err := c.Agent.DestroySandbox(hctx, &agentpb.DestroySandboxRequest{}); err != nil {
		t.Fatalf("DestroySandbox: %v", err)
	}
	for range 2 {
		select {
		case <-blocked: // A was killed: its wait and read end
		case <-time.After(10 * time.Second):
			t.Fatal("A's blocked calls did not end after DestroySandbox")
		}
	}
}
