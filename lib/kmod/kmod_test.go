package kmod

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wren-vm/wren/rootfs-builder/kernelpkg"
)

func debianModules(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k, err := kernelpkg.Fetch(ctx, kernelpkg.Options{})
	if err != nil {
		t.Fatalf("fetch Debian kernel: %v", err)
	}
	return k.ModulesDir
}

func names(ms []*Module) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

// checkOrder fails unless every module comes after all of its dependencies.
func checkOrder(t *testing.T, ms []*Module) {
	t.Helper()
	pos := map[string]int{}
	for i, m := range ms {
		if _, dup := pos[m.Name]; dup {
			t.Errorf("%s listed twice", m.Name)
		}
		pos[m.Name] = i
	}
	for i, m := range ms {
		for _, d := range m.Depends {
			j, ok := pos[d]
			if !ok {
				continue // built in
			}
			if j >= i {
				t.Errorf("%s (at %d) before its dependency %s (at %d)", m.Name, i, d, j)
			}
		}
	}
}

func TestResolveDebianModules(t *testing.T) {
	ix, err := Scan(debianModules(t))
	if err != nil {
		t.Fatal(err)
	}
	if ix.Len() < 1000 {
		t.Fatalf("only %d modules indexed", ix.Len())
	}
	ms, err := ix.Resolve([]string{"virtiofs", "virtio_pci", "vmw_vsock_virtio_transport", "nd_pmem", "ext4", "overlay"})
	if err != nil {
		t.Fatal(err)
	}
	checkOrder(t, ms)
	got := " " + strings.Join(names(ms), " ") + " "
	// Dependencies read from .modinfo, not from the request.
	for _, want := range []string{"fuse", "virtio", "virtio_ring", "vsock", "vmw_vsock_virtio_transport_common", "libnvdimm", "nd_btt", "jbd2", "mbcache", "crc16", "virtio_pci_modern_dev"} {
		if !strings.Contains(got, " "+want+" ") {
			t.Errorf("closure lacks %s: %s", want, got)
		}
	}
	virtiofs, _ := ix.Module("virtiofs")
	if strings.Join(virtiofs.Depends, ",") != "fuse,virtio,virtio_ring" {
		t.Errorf("virtiofs depends = %v", virtiofs.Depends)
	}
	ext4, _ := ix.Module("ext4")
	if len(ext4.SoftPre) == 0 || ext4.SoftPre[0] != "crypto_crc32c" {
		t.Errorf("ext4 softdep pre = %v", ext4.SoftPre)
	}
	for _, m := range ms {
		if m.InstallPath() != m.Path || !strings.HasSuffix(m.Path, ".ko") {
			t.Errorf("%s: path %s install %s", m.Name, m.Path, m.InstallPath())
		}
	}
}

func TestResolveErrorsAndBuiltins(t *testing.T) {
	ix, err := Scan(debianModules(t))
	if err != nil {
		t.Fatal(err)
	}
	// Built into Debian's kernel: no file, no error.
	if !ix.Builtin("unix") {
		t.Skip("unix is not built in on this kernel")
	}
	ms, err := ix.Resolve([]string{"unix", "overlay"})
	if err != nil || len(ms) != 1 || ms[0].Name != "overlay" {
		t.Errorf("Resolve(unix, overlay) = %v, %v", names(ms), err)
	}
	_, err = ix.Resolve([]string{"overlay", "no_such_module"})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no_such_module") {
		t.Errorf("missing module: %v", err)
	}
	// Hyphens and underscores name the same module.
	ms, err = ix.Resolve([]string{"virtio-rng"})
	if err != nil || names(ms)[len(ms)-1] != "virtio_rng" {
		t.Errorf("virtio-rng: %v %v", names(ms), err)
	}
}

// TestCompressedModules recompresses real modules the way kbuild does
// (xz --check=crc32 --lzma2=dict=1MiB; gzip -9) and checks that they are
// indexed, read and installed as plain .ko.
func TestCompressedModules(t *testing.T) {
	src := debianModules(t)
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("xz not installed (apt-get install xz-utils)")
	}
	dir := t.TempDir()
	copyTo := func(rel, suffix string, compress ...string) []byte {
		t.Helper()
		plain, err := os.ReadFile(filepath.Join(src, rel))
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, rel+suffix)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(compress[0], compress[1:]...)
		cmd.Stdin = bytes.NewReader(plain)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, out, 0o644); err != nil {
			t.Fatal(err)
		}
		return plain
	}
	fusePlain := copyTo("kernel/fs/fuse/fuse.ko", ".xz", "xz", "--check=crc32", "--lzma2=dict=1MiB", "-c")
	copyTo("kernel/fs/fuse/virtiofs.ko", ".gz", "gzip", "-9", "-c")
	copyTo("kernel/drivers/virtio/virtio.ko", ".xz", "xz", "--check=crc32", "-c")
	copyTo("kernel/drivers/virtio/virtio_ring.ko", ".xz", "xz", "--check=crc32", "-c")
	ix, err := Scan(dir)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := ix.Resolve([]string{"virtiofs"})
	if err != nil {
		t.Fatal(err)
	}
	checkOrder(t, ms)
	if len(ms) != 4 || ms[len(ms)-1].Name != "virtiofs" {
		t.Fatalf("order = %v", names(ms))
	}
	fuse, _ := ix.Module("fuse")
	if fuse.InstallPath() != "kernel/fs/fuse/fuse.ko" {
		t.Errorf("install path %s", fuse.InstallPath())
	}
	got, err := fuse.Contents()
	if err != nil || !bytes.Equal(got, fusePlain) {
		t.Errorf("decompressed fuse differs (%d vs %d bytes): %v", len(got), len(fusePlain), err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kernel/x.ko.zst"), []byte("whatever"), 0o644); err != nil {
		t.Fatal(err)
	}
	ix, _ = Scan(dir)
	if _, err := ix.Module("x"); err == nil || !strings.Contains(err.Error(), "zstd") {
		t.Errorf("zst module: %v", err)
	}
}

// TestResolveCycle uses hand-made index entries: real module trees have no
// cycles (the kernel refuses them), so this is the only way to exercise it.
func TestResolveCycle(t *testing.T) {
	ix := &Index{Dir: "/fake", files: map[string]string{"a": "a.ko", "b": "b.ko", "c": "c.ko"}, loaded: map[string]*Module{
		"a": {Name: "a", Depends: []string{"b"}},
		"b": {Name: "b", Depends: []string{"c"}},
		"c": {Name: "c", Depends: []string{"a"}},
	}, builtin: map[string]bool{}}
	_, err := ix.Resolve([]string{"a"})
	if err == nil || !strings.Contains(err.Error(), "a -> b -> c -> a") {
		t.Fatalf("err = %v", err)
	}
}

func TestScanErrors(t *testing.T) {
	if _, err := Scan("/nonexistent/modules"); err == nil {
		t.Error("missing dir accepted")
	}
	if _, err := Scan(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no kernel modules") {
		t.Errorf("empty dir: %v", err)
	}
	if _, err := Modinfo([]byte("not elf")); err == nil {
		t.Error("non-ELF accepted")
	}
}

// A kernel with everything built in ships only modules.builtin: a built-in
// name resolves to nothing to load, any other name is not found.
func TestScanBuiltinOnly(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/drivers/block/virtio_blk.ko\nkernel/fs/fuse/fuse.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ix, err := Scan(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !ix.Builtin("virtio_blk") || !ix.Builtin("fuse") {
		t.Error("built-in modules not reported built in")
	}
	if mods, err := ix.Resolve([]string{"virtio_blk"}); err != nil || len(mods) != 0 {
		t.Errorf("Resolve(built-in) = %v, %v; want nothing to load", mods, err)
	}
	if _, err := ix.Resolve([]string{"ext4"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve(ext4) = %v, want ErrNotFound", err)
	}
}

func TestNameOf(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/drivers/char/hw_random/virtio-rng.ko": "virtio_rng",
		"fuse.ko.xz": "fuse",
		"a-b.ko.gz":  "a_b",
	} {
		if got := NameOf(in); got != want {
			t.Errorf("NameOf(%q) = %q, want %q", in, got, want)
		}
	}
}
