package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	if _, errOut, code := wrenctl(t, "", "vm", "down", "--dir", dir); code != exitError || !strings.Contains(errOut, "no VM in") {
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
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		t.Errorf("a failed vm up left %d entries in the state dir", len(ents))
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
