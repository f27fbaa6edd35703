package fsremove

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/internal/testroot"
)

// mount mounts and unmounts (detached) when the test ends, before the
// test's TempDir is removed.
func mount(t *testing.T, src, dst, fstype string, flags uintptr) {
	t.Helper()
	if err := unix.Mount(src, dst, fstype, flags, ""); err != nil {
		t.Fatalf("mount %s on %s: %v", src, dst, err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dst, unix.MNT_DETACH) }) // a test may have unmounted it
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// A bundle-like tree with a directory bind-mounted deep inside it: All
// refuses, removes nothing, and the bind source keeps its content. This is
// the host-/dev wipe made impossible.
func TestAllRefusesTreeWithBindMount(t *testing.T) {
	testroot.Require(t, "mounting")
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	write(t, filepath.Join(victim, "null"), "precious")
	tree := filepath.Join(dir, "bundle")
	write(t, filepath.Join(tree, "config.json"), "{}")
	mnt := filepath.Join(tree, "rootfs", "dev")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	mount(t, victim, mnt, "", unix.MS_BIND)

	err := All(tree)
	if !errors.Is(err, ErrMounted) {
		t.Fatalf("All over a bind mount: %v, want ErrMounted", err)
	}
	if !strings.Contains(err.Error(), mnt) {
		t.Errorf("error %q does not name the mount point %s", err, mnt)
	}
	if b, err := os.ReadFile(filepath.Join(victim, "null")); err != nil || string(b) != "precious" {
		t.Errorf("bind source damaged: %q, %v", b, err)
	}
	if !exists(filepath.Join(tree, "config.json")) {
		t.Error("refused removal still removed files")
	}

	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	if err := All(tree); err != nil {
		t.Fatalf("All after unmount: %v", err)
	}
	if exists(tree) {
		t.Error("tree still exists after All")
	}
	if !exists(filepath.Join(victim, "null")) {
		t.Error("removing the tree removed the former bind source")
	}
}

func TestAllRefusesMountPointItself(t *testing.T) {
	testroot.Require(t, "mounting")
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mount(t, "tmpfs", dir, "tmpfs", 0)
	write(t, filepath.Join(dir, "f"), "x")
	if err := All(dir); !errors.Is(err, ErrMounted) {
		t.Fatalf("All on a mount point: %v, want ErrMounted", err)
	}
	if !exists(filepath.Join(dir, "f")) {
		t.Error("file on the mount removed")
	}
}

// The walk's own guard, without the mountinfo pre-check: a mount that
// appears after the check (here: one the check is skipped for) is never
// entered, and neither is a file bind mount unlinked through.
func TestWalkStopsAtMounts(t *testing.T) {
	testroot.Require(t, "mounting")
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	write(t, filepath.Join(victim, "keep"), "x")
	victimFile := filepath.Join(dir, "victim-file")
	write(t, victimFile, "y")
	tree := filepath.Join(dir, "tree")
	write(t, filepath.Join(tree, "a", "b", "plain"), "z")
	if err := os.MkdirAll(filepath.Join(tree, "a", "same-fs"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A bind from the same filesystem: same st_dev, told apart only by
	// the mount id.
	mount(t, victim, filepath.Join(tree, "a", "same-fs"), "", unix.MS_BIND)
	if err := os.MkdirAll(filepath.Join(tree, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	mount(t, "tmpfs", filepath.Join(tree, "tmp"), "tmpfs", 0)
	write(t, filepath.Join(tree, "tmp", "on-tmpfs"), "t")
	write(t, filepath.Join(tree, "file-target"), "")
	mount(t, victimFile, filepath.Join(tree, "file-target"), "", unix.MS_BIND)

	parent, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(parent)
	top, err := identify(parent, "tree")
	if err != nil {
		t.Fatal(err)
	}
	err = removeDir(parent, "tree", top, tree)
	if !errors.Is(err, ErrMounted) {
		t.Fatalf("walk over mounts: %v, want ErrMounted", err)
	}
	for _, p := range []string{filepath.Join(victim, "keep"), victimFile, filepath.Join(tree, "tmp", "on-tmpfs")} {
		if !exists(p) {
			t.Errorf("%s removed through a mount", p)
		}
	}
	if exists(filepath.Join(tree, "a", "b", "plain")) {
		t.Error("the walk did not remove what was on the tree's own filesystem")
	}
}

func TestAllDoesNotFollowSymlinks(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	write(t, filepath.Join(victim, "keep"), "x")
	tree := filepath.Join(dir, "tree")
	write(t, filepath.Join(tree, "sub", "f"), "y")
	if err := os.Symlink(victim, filepath.Join(tree, "sub", "link")); err != nil {
		t.Fatal(err)
	}
	if err := All(tree); err != nil {
		t.Fatal(err)
	}
	if exists(tree) || !exists(filepath.Join(victim, "keep")) {
		t.Errorf("tree exists %v, victim/keep exists %v", exists(tree), exists(filepath.Join(victim, "keep")))
	}
	// A symlink given as the path is removed, not its target.
	link := filepath.Join(dir, "l")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	if err := All(link); err != nil || exists(link) || !exists(filepath.Join(victim, "keep")) {
		t.Errorf("All(symlink): %v; link exists %v", err, exists(link))
	}
}

func TestAllMissingAndFile(t *testing.T) {
	dir := t.TempDir()
	if err := All(filepath.Join(dir, "nope")); err != nil {
		t.Errorf("missing path: %v", err)
	}
	f := filepath.Join(dir, "f")
	write(t, f, "x")
	if err := All(f); err != nil || exists(f) {
		t.Errorf("file: %v, exists %v", err, exists(f))
	}
	// Deep tree, wider than one Readdirnames batch.
	deep := filepath.Join(dir, "deep")
	p := deep
	for i := 0; i < 50; i++ {
		p = filepath.Join(p, "d")
	}
	write(t, filepath.Join(p, "leaf"), "x")
	for i := 0; i < 1100; i++ {
		write(t, filepath.Join(deep, "wide", "f"+strconv.Itoa(i)), "")
	}
	if err := All(deep); err != nil || exists(deep) {
		t.Errorf("deep tree: %v, exists %v", err, exists(deep))
	}
}

func TestMountsUnderParsesEscapes(t *testing.T) {
	info := `22 1 0:20 / / rw - ext4 /dev/root rw
30 22 0:5 / /run/kata\040containers/c1/rootfs rw - bind /x rw
31 22 0:6 / /run/kata-containers-other rw - tmpfs tmpfs rw
32 22 0:7 / /run/kata\040containers rw - tmpfs tmpfs rw
`
	got, err := mountsUnder(strings.NewReader(info), "/run/kata containers")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/run/kata containers/c1/rootfs", "/run/kata containers"}
	if !slices.Equal(got, want) {
		t.Errorf("mountsUnder = %q, want %q", got, want)
	}
}
