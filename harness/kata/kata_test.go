package kata

import (
	"os"
	"path/filepath"
	"testing"
)

func TestShareRootfs(t *testing.T) {
	shared, src := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "bin", "hello"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("hello", filepath.Join(src, "bin", "hi")); err != nil {
		t.Fatal(err)
	}
	guest, remove, err := ShareRootfs(shared, "c1", src)
	if err != nil {
		t.Fatal(err)
	}
	if guest != "/run/kata-containers/shared/containers/c1/rootfs" {
		t.Errorf("guest path %q", guest)
	}
	st, err := os.Stat(filepath.Join(shared, "c1", "rootfs", "bin", "hello"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("copied file: %v %v", st, err)
	}
	if l, err := os.Readlink(filepath.Join(shared, "c1", "rootfs", "bin", "hi")); err != nil || l != "hello" {
		t.Errorf("symlink: %q %v", l, err)
	}
	if _, _, err := ShareRootfs(shared, "c1", src); err == nil {
		t.Error("second share of the same id succeeded")
	}
	if err := remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(shared, "c1")); !os.IsNotExist(err) {
		t.Errorf("share not removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(src, "bin", "hello")); err != nil {
		t.Errorf("source damaged: %v", err)
	}
}

func TestShareRootfsBadInput(t *testing.T) {
	shared := t.TempDir()
	for _, id := range []string{"", "../x", "a/b", ".hidden"} {
		if _, _, err := ShareRootfs(shared, id, t.TempDir()); err == nil {
			t.Errorf("id %q accepted", id)
		}
	}
	if _, _, err := ShareRootfs(shared, "c", filepath.Join(shared, "missing")); err == nil {
		t.Error("missing rootfs accepted")
	}
	if entries, _ := os.ReadDir(shared); len(entries) != 0 {
		t.Errorf("failed calls left %d entries", len(entries))
	}
}

func TestSharedStorage(t *testing.T) {
	s := SharedStorage()
	if s.Driver != "virtio-fs" || s.Source != "kataShared" || s.Fstype != "virtiofs" || s.MountPoint != GuestSharedDir {
		t.Errorf("storage %v", s)
	}
}
