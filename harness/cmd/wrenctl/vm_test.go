package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wren-vm/wren/harness/testagent"
	"github.com/wren-vm/wren/harness/vm"
)

// The vm verbs without a VM: usage errors and a directory holding none.
// Booting one is harness/e2e's TestWrenctlVM.
func TestWrenctlVMWithoutVM(t *testing.T) {
	dir := t.TempDir()
	if _, errOut, code := wrenctl(t, "", "vm"); code != exitUsage || !strings.Contains(errOut, "wrenctl vm up") {
		t.Errorf("vm: %d %q", code, errOut)
	}
	if _, errOut, code := wrenctl(t, "", "vm", "frob"); code != exitUsage || !strings.Contains(errOut, `unknown vm command "frob"`) {
		t.Errorf("vm frob: %d %q", code, errOut)
	}
	if _, _, code := wrenctl(t, "", "vm", "status", "--dir", dir, "extra"); code != exitUsage {
		t.Errorf("vm status with an argument: %d", code)
	}
	if out, _, code := wrenctl(t, "", "vm", "status", "--dir", dir); code != exitError || !strings.Contains(out, "state=down") {
		t.Errorf("vm status of an empty dir: %d %q", code, out)
	}
	// Nothing to stop is what down asks for: exit 0, saying so.
	if _, errOut, code := wrenctl(t, "", "vm", "down", "--dir", dir); code != exitOK || errOut != "vm: no VM running in "+dir+"\n" {
		t.Errorf("vm down of an empty dir: %d %q", code, errOut)
	}
	if _, errOut, code := wrenctl(t, "", "vm", "console", "--dir", dir); code != exitError || !strings.Contains(errOut, "no VM in") {
		t.Errorf("vm console of an empty dir: %d %q", code, errOut)
	}
	// A missing kernel is reported before anything starts.
	_, errOut, code := wrenctl(t, "", "vm", "up", "--dir", dir, "--kernel", filepath.Join(dir, "nope"), "--initrd", filepath.Join(dir, "nope"))
	if code != exitError || !strings.Contains(errOut, "kernel") {
		t.Errorf("vm up with a missing kernel: %d %q", code, errOut)
	}
	// --dax-root boots make kernel's kernel from a root image: not with an
	// initramfs, not with a kernel that has no .config beside it.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--dax-root", "--initrd", filepath.Join(dir, "i")}, "not from --initrd"},
		{[]string{"--dax-root", "--kernel", filepath.Join(dir, "vmlinuz")}, "needs make kernel's kernel"},
	} {
		args := append([]string{"vm", "up", "--dir", dir}, c.args...)
		if _, errOut, code := wrenctl(t, "", args...); code != exitError || !strings.Contains(errOut, c.want) {
			t.Errorf("vm up %v: %d %q, want %q", c.args, code, errOut, c.want)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		t.Errorf("a failed vm up left %d entries in the state dir", len(ents))
	}
}

// vm template and vm up --template without a template: usage and a clear
// error before anything starts (templates themselves: harness/e2e).
func TestWrenctlVMTemplateWithoutTemplate(t *testing.T) {
	dir := t.TempDir()
	if _, errOut, code := wrenctl(t, "", "vm", "template"); code != exitUsage || !strings.Contains(errOut, "vm template create --dir") {
		t.Errorf("vm template: %d %q", code, errOut)
	}
	if out, _, code := wrenctl(t, "", "vm", "template", "--help"); code != exitOK || !strings.Contains(out, "--memory") {
		t.Errorf("vm template --help: %d %q", code, out)
	}
	state := filepath.Join(dir, "vm")
	_, errOut, code := wrenctl(t, "", "vm", "up", "--dir", state, "--template", filepath.Join(dir, "none"))
	if code != exitError || !strings.Contains(errOut, "no template in "+filepath.Join(dir, "none")) {
		t.Errorf("vm up --template of a missing template: %d %q", code, errOut)
	}
	if _, err := os.Stat(state); err == nil {
		t.Error("a refused clone made its state directory")
	}
	if _, errOut, code := wrenctl(t, "", "vm", "up", "--dir", state, "--template", dir, "--debug"); code != exitUsage || !strings.Contains(errOut, "--debug is the template's") {
		t.Errorf("vm up --template --debug: %d %q", code, errOut)
	}
}

// A second vm up in a directory whose VM runs refuses before building or
// fetching anything, and vm down stops what the directory records. The
// "VM" is a sleep recorded as its QEMU, as vm.json would record it.
func TestWrenctlVMUpWhileOneRuns(t *testing.T) {
	dir := t.TempDir()
	sleep := exec.Command("sleep", "600")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = sleep.Wait(); close(exited) }()
	defer func() { _ = sleep.Process.Kill(); <-exited }()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", sleep.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	state, _ := json.Marshal(vm.State{Dir: dir, Addr: "hvsock://" + dir + "/vsock.sock:1024", Procs: []*vm.Proc{{Name: "qemu", PID: sleep.Process.Pid, Start: start}}})
	if err := os.WriteFile(filepath.Join(dir, "vm.json"), state, 0o644); err != nil {
		t.Fatal(err)
	}

	// No --kernel or --initrd: without the check, up would build them.
	cmd := exec.Command(testagent.Binary(t, "wrenctl"), "vm", "up", "--dir", dir)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != exitError || !strings.Contains(string(out), "a VM already runs in "+dir) || strings.Contains(string(out), "building") {
		t.Errorf("second vm up: exit %d (%v), output %q", code, err, out)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the refused vm up changed the state dir: %d entries", len(ents))
	}

	if _, errOut, code := wrenctl(t, "", "vm", "down", "--dir", dir); code != exitOK || !strings.Contains(errOut, "vm: stopped") {
		t.Errorf("vm down: %d %q", code, errOut)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Error("vm down left the recorded QEMU running")
	}
	if _, errOut, code := wrenctl(t, "", "vm", "down", "--dir", dir); code != exitOK || !strings.Contains(errOut, "no VM running in "+dir) {
		t.Errorf("second vm down: %d %q", code, errOut)
	}
}

func TestWrenctlRunSharedDirErrors(t *testing.T) {
	bundle := t.TempDir()
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(`{"ociVersion":"1.0.2","process":{"args":["true"],"cwd":"/"},"root":{"path":"rootfs"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	shared := t.TempDir()
	// The rootfs does not exist: refused before any RPC, nothing in the share.
	_, errOut, code := wrenctl(t, "", "--addr", "unix://"+filepath.Join(t.TempDir(), "none.sock"), "run", "--shared-dir", shared, "--bundle", bundle, "c1")
	if code != exitError || !strings.Contains(errOut, "--shared-dir") {
		t.Errorf("run with a missing rootfs: %d %q", code, errOut)
	}
	if ents, _ := os.ReadDir(shared); len(ents) > 0 {
		t.Errorf("the share holds %d entries after a refused run", len(ents))
	}
	// An agent in a VM (hvsock, vsock) and no --shared-dir: the host's
	// rootfs path means nothing there; say how to share it instead.
	for _, addr := range []string{"hvsock://" + filepath.Join(t.TempDir(), "vsock.sock") + ":1024", "vsock://3:1024"} {
		_, errOut, code = wrenctl(t, "", "--addr", addr, "run", "--bundle", bundle, "c1")
		if code != exitUsage || !strings.Contains(errOut, "is in a VM") || !strings.Contains(errOut, "--shared-dir") || !strings.Contains(errOut, "shared_dir=") {
			t.Errorf("run against %s without --shared-dir: %d %q", addr, code, errOut)
		}
	}
}
