package image

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wren-vm/wren/rootfs-builder/cpio"
)

func TestPFNInfo(t *testing.T) {
	b := PFNInfo()
	if len(b) != 4096 || string(b[:16]) != "NVDIMM_PFN_INFO\x00" {
		t.Fatalf("signature %q", b[:16])
	}
	stored := binary.LittleEndian.Uint64(b[4088:])
	zeroed := append([]byte(nil), b...)
	binary.LittleEndian.PutUint64(zeroed[4088:], 0)
	if fletcher64(zeroed) != stored || stored == 0 {
		t.Errorf("checksum %#x does not verify", stored)
	}
	if binary.LittleEndian.Uint64(b[56:]) != 2<<20 || binary.LittleEndian.Uint32(b[72:]) != 1 || binary.LittleEndian.Uint32(b[84:]) != 2<<20 {
		t.Errorf("dataoff/mode/align wrong")
	}
	// Fletcher-64 as the kernel computes it, on a known input: words 1, 2.
	if got := fletcher64([]byte{1, 0, 0, 0, 2, 0, 0, 0}); got != (1+3)<<32|3 {
		t.Errorf("fletcher64 = %#x", got)
	}
}

func sampleTree(t *testing.T) *cpio.Archive {
	t.Helper()
	a := cpio.NewArchive()
	for _, err := range []error{
		a.File("/etc/wren-image-test", 0o644, []byte("hello from the DAX image\n")),
		a.File("/sbin/tool", 0o4755, []byte("#!/bin/sh\n")),
		a.Symlink("/bin/sh", "busybox"),
		a.Dir("/tmp", 0o1777),
		a.CharDev("/dev/console", 0o600, 5, 1),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return a
}

func debugfs(t *testing.T, img, req string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", req, img+"?offset=3145728").CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs %s: %v\n%s", req, err, out)
	}
	return string(out)
}

func TestBuildLayout(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "guest.img")
	var prog bytes.Buffer
	if err := Build(context.Background(), Options{Tree: sampleTree(t), Out: img, MTime: 1234, Progress: &prog}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(data)%(128<<20) != 0 || len(data) == 0 {
		t.Fatalf("size %d not a multiple of 128 MiB", len(data))
	}
	sectors := uint32((len(data) - 3<<20) / 512)
	for _, m := range []struct {
		off   int
		start uint32
	}{{0, 6144}, {2 << 20, 2048}} {
		b := data[m.off : m.off+512]
		if b[510] != 0x55 || b[511] != 0xaa || b[446+4] != 0x83 {
			t.Errorf("MBR at %d invalid", m.off)
		}
		if s := binary.LittleEndian.Uint32(b[446+8:]); s != m.start {
			t.Errorf("MBR at %d: partition starts at LBA %d, want %d", m.off, s, m.start)
		}
		if n := binary.LittleEndian.Uint32(b[446+12:]); n != sectors {
			t.Errorf("MBR at %d: %d sectors, want %d", m.off, n, sectors)
		}
	}
	if !bytes.Equal(data[4096:8192], PFNInfo()) {
		t.Error("no PFN info block at 4 KiB")
	}
	// The filesystem, read by e2fsprogs at the partition offset.
	if out, err := exec.Command("e2fsck", "-fn", img+"?offset=3145728").CombinedOutput(); err != nil {
		t.Errorf("e2fsck: %v\n%s", err, out)
	}
	if got := debugfs(t, img, "cat /etc/wren-image-test"); !strings.Contains(got, "hello from the DAX image") {
		t.Errorf("file content: %s", got)
	}
	st := debugfs(t, img, "stat /sbin/tool")
	if !strings.Contains(st, "Mode:  04755") || !strings.Contains(st, "User:     0") {
		t.Errorf("/sbin/tool inode:\n%s", st)
	}
	if st := debugfs(t, img, "stat /tmp"); !strings.Contains(st, "Mode:  01777") {
		t.Errorf("/tmp inode:\n%s", st)
	}
	if got := debugfs(t, img, "stat /bin/sh"); !strings.Contains(got, `Fast link dest: "busybox"`) {
		t.Errorf("/bin/sh:\n%s", got)
	}
	if got := debugfs(t, img, "ls /dev"); strings.Contains(got, "console") {
		t.Error("device node copied into the image")
	}
	if !strings.Contains(prog.String(), "mke2fs") {
		t.Errorf("no progress output: %q", prog.String())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

func TestBuildReproducible(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	for i, p := range []string{a, b} {
		if i > 0 {
			// Staged files get the host's ctime; builds in different
			// seconds must still match.
			time.Sleep(1100 * time.Millisecond)
		}
		if err := Build(context.Background(), Options{Tree: sampleTree(t), Out: p, MTime: 1}); err != nil {
			t.Fatal(err)
		}
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if !bytes.Equal(da, db) {
		for i := range da {
			if da[i] != db[i] {
				t.Fatalf("images differ, first at byte %d (fs offset %d)", i, i-3<<20)
			}
		}
	}
}

// TestBuildUnchanged: an image built again from the same tree stays the
// same file (same inode, "unchanged" in the progress); another tree
// replaces it.
func TestBuildUnchanged(t *testing.T) {
	out := filepath.Join(t.TempDir(), "root.img")
	var progress bytes.Buffer
	build := func(tree *cpio.Archive) os.FileInfo {
		t.Helper()
		progress.Reset()
		if err := Build(context.Background(), Options{Tree: tree, Out: out, MTime: 1, Progress: &progress}); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(out)
		if err != nil {
			t.Fatal(err)
		}
		return fi
	}
	first := build(sampleTree(t))
	second := build(sampleTree(t))
	if !os.SameFile(first, second) {
		t.Error("a rebuild from the same tree replaced the image")
	}
	if !strings.Contains(progress.String(), "unchanged") {
		t.Errorf("progress of the rebuild does not say unchanged:\n%s", progress.String())
	}
	other := sampleTree(t)
	if err := other.File("/other", 0o644, []byte("other\n")); err != nil {
		t.Fatal(err)
	}
	if third := build(other); os.SameFile(second, third) {
		t.Error("an image of another tree kept the old file")
	}
}

func TestBuildErrors(t *testing.T) {
	if err := Build(context.Background(), Options{Out: "/tmp/x"}); err == nil {
		t.Error("no tree accepted")
	}
	if err := Build(context.Background(), Options{Tree: sampleTree(t)}); err == nil {
		t.Error("no output accepted")
	}
	if err := Build(context.Background(), Options{Tree: sampleTree(t), Out: filepath.Join(t.TempDir(), "x"), Align: 1000}); err == nil {
		t.Error("bad alignment accepted")
	}
	a := cpio.NewArchive()
	if err := a.HostFile("/missing", 0o644, "/nonexistent/file"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	err := Build(context.Background(), Options{Tree: a, Out: filepath.Join(dir, "x.img")})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/file") {
		t.Errorf("missing source: %v", err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}
