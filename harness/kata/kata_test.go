package kata

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
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
	dir, ok := strings.CutSuffix(strings.TrimPrefix(guest, "/run/kata-containers/shared/containers/"), "/rootfs")
	if !ok || !strings.HasPrefix(dir, "c1-") || strings.Contains(dir, "/") {
		t.Fatalf("guest path %q", guest)
	}
	st, err := os.Stat(filepath.Join(shared, dir, "rootfs", "bin", "hello"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("copied file: %v %v", st, err)
	}
	if l, err := os.Readlink(filepath.Join(shared, dir, "rootfs", "bin", "hi")); err != nil || l != "hello" {
		t.Errorf("symlink: %q %v", l, err)
	}
	// The same id again (a bundle run twice) gets a directory of its own:
	// the guest may still cache the first one's entries.
	guest2, remove2, err := ShareRootfs(shared, "c1", src)
	if err != nil {
		t.Fatal(err)
	}
	if guest2 == guest {
		t.Errorf("second share of c1 reuses %s", guest)
	}
	for _, rm := range []func() error{remove, remove2} {
		if err := rm(); err != nil {
			t.Fatal(err)
		}
	}
	if entries, _ := os.ReadDir(shared); len(entries) != 0 {
		t.Errorf("shares not removed: %d entries left", len(entries))
	}
	if _, err := os.Stat(filepath.Join(src, "bin", "hello")); err != nil {
		t.Errorf("source damaged: %v", err)
	}
}

// A rootfs given as a symlink (rootfs -> /srv/images/busybox) is copied
// as the directory it names: the link would dangle in the guest.
func TestShareRootfsFollowsASymlinkedRootfs(t *testing.T) {
	shared, src := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "hello"), []byte("hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "rootfs")
	if err := os.Symlink(src, link); err != nil {
		t.Fatal(err)
	}
	guest, remove, err := ShareRootfs(shared, "c1", link)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = remove() }()
	name := strings.TrimSuffix(strings.TrimPrefix(guest, GuestSharedDir+"/"), "/rootfs")
	copied := HostRootfs(shared, name)
	if st, err := os.Lstat(copied); err != nil || !st.IsDir() {
		t.Fatalf("the share holds %v (%v), want a directory", st.Mode(), err)
	}
	if b, err := os.ReadFile(filepath.Join(copied, "hello")); err != nil || string(b) != "hi\n" {
		t.Errorf("copied file: %q %v", b, err)
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

func TestStripPIDNamespace(t *testing.T) {
	for _, c := range []struct {
		name   string
		ns     []specs.LinuxNamespace
		shared bool
	}{
		{"new", []specs.LinuxNamespace{{Type: specs.MountNamespace}, {Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}}, false},
		{"path", []specs.LinuxNamespace{{Type: specs.PIDNamespace, Path: "/proc/7/ns/pid"}, {Type: specs.MountNamespace}}, true},
		{"none", []specs.LinuxNamespace{{Type: specs.MountNamespace}}, false},
	} {
		s := &specs.Spec{Linux: &specs.Linux{Namespaces: slices.Clone(c.ns)}}
		if got := StripPIDNamespace(s); got != c.shared {
			t.Errorf("%s: sandbox_pidns %v, want %v", c.name, got, c.shared)
		}
		for _, n := range s.Linux.Namespaces {
			if n.Type == specs.PIDNamespace {
				t.Errorf("%s: pid namespace left in %v", c.name, s.Linux.Namespaces)
			}
		}
		if want := len(c.ns) - 1; c.name != "none" && len(s.Linux.Namespaces) != want {
			t.Errorf("%s: %d namespaces left, want %d", c.name, len(s.Linux.Namespaces), want)
		}
	}
}

func TestShapeSpec(t *testing.T) {
	s := &specs.Spec{Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
		{Type: specs.PIDNamespace, Path: "/proc/9/ns/pid"}, {Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-1"},
		{Type: specs.CgroupNamespace}, {Type: specs.IPCNamespace, Path: "/proc/9/ns/ipc"}, {Type: specs.MountNamespace}, {Type: specs.UTSNamespace},
	}}}
	if !ShapeSpec(s) {
		t.Error("a pid namespace with a path is sandbox_pidns")
	}
	want := []specs.LinuxNamespace{{Type: specs.IPCNamespace}, {Type: specs.MountNamespace}, {Type: specs.UTSNamespace}}
	if !slices.Equal(s.Linux.Namespaces, want) {
		t.Errorf("namespaces %v, want %v", s.Linux.Namespaces, want)
	}
}
