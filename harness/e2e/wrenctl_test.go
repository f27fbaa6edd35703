package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wren-vm/wren/harness/vm"
	"github.com/wren-vm/wren/internal/testbundle"
)

// wrenctl runs the wrenctl binary and returns stdout, stderr and its exit
// status.
func wrenctl(t *testing.T, bins string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bins, "wrenctl"), args...)
	cmd.Env = append(os.Environ(), "WREN_BIN="+bins)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("wrenctl %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// keyValues parses wrenctl's key=value lines.
func keyValues(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// TestWrenctlVM drives a detached pod VM through the command line only:
// vm up --debug, vm status, run --shared-dir, vm console, vm down.
func TestWrenctlVM(t *testing.T) {
	requireVM(t)
	bins := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	work := t.TempDir()
	art, err := vm.BuildArtifacts(ctx, filepath.Join(bins, "wren-agent"), filepath.Join(work, "boot"), true, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(work, "vm")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("console tail:\n%s", vm.Tail(filepath.Join(dir, "console.log"), 40))
		}
		wrenctl(t, bins, "", "vm", "down", "--dir", dir)
		if l := processesMentioning(dir); len(l) > 0 {
			t.Errorf("left running after vm down:\n%s", strings.Join(l, "\n"))
		}
	})

	out, errOut, code := wrenctl(t, bins, "", "vm", "up", "--dir", dir, "--debug", "--kernel", art.Kernel, "--initrd", art.Initrd)
	if code != 0 {
		t.Fatalf("vm up: status %d\n%s", code, errOut)
	}
	up := keyValues(out)
	if !strings.HasPrefix(up["addr"], "hvsock://") || !strings.HasSuffix(up["addr"], "/vsock.sock:1024") || up["shared_dir"] == "" {
		t.Fatalf("vm up printed %q", out)
	}

	out, _, code = wrenctl(t, bins, "", "vm", "status", "--dir", dir)
	st := keyValues(out)
	if code != 0 || st["state"] != "running" || st["agent"] != "serving" || st["debug"] != "true" {
		t.Errorf("vm status: %d %q", code, out)
	}
	if _, _, code := wrenctl(t, bins, "", "vm", "up", "--dir", dir); code == 0 {
		t.Error("a second vm up in the same directory succeeded")
	}

	// A bundle as runc would take it; wrenctl copies its rootfs into the share.
	bundle := filepath.Join(work, "bundle")
	testbundle.Rootfs(t, filepath.Join(bundle, "rootfs"))
	spec := testbundle.Spec("rootfs", "/bin/sh", "-c", "echo hello via wrenctl; uname -r")
	b, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = wrenctl(t, bins, "", "--addr", up["addr"], "run", "--shared-dir", up["shared_dir"], "--bundle", bundle, "cli1")
	if code != 0 || out != "hello via wrenctl\n"+art.KernelVersion+"\n" {
		t.Errorf("wrenctl run: status %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(up["shared_dir"], "cli1")); !os.IsNotExist(err) {
		t.Errorf("the rootfs copy stayed in the share: %v", err)
	}

	out, errOut, code = wrenctl(t, bins, "echo console:$(uname -r)\n", "vm", "console", "--dir", dir)
	if code != 0 || !strings.Contains(out, "console:"+art.KernelVersion) {
		t.Errorf("vm console: status %d, stdout %q, stderr %q", code, out, errOut)
	}

	if _, errOut, code := wrenctl(t, bins, "", "vm", "down", "--dir", dir); code != 0 {
		t.Errorf("vm down: %d %s", code, errOut)
	}
	out, _, code = wrenctl(t, bins, "", "vm", "status", "--dir", dir)
	if code == 0 || keyValues(out)["state"] != "down" {
		t.Errorf("vm status after down: %d %q", code, out)
	}
	for _, f := range []string{"vsock.sock", "qmp.sock", "vm.json", "shared"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", f, err)
		}
	}
	if !strings.Contains(vm.Tail(filepath.Join(dir, "agent.log"), 100), `"msg":"listening"`) {
		t.Error("the detached log collector wrote no agent log")
	}
}
