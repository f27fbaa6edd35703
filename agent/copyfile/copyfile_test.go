package copyfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/errdefs"
)

// setup returns a shared directory and a sibling "outside" directory an
// escape would write into.
func setup(t *testing.T) (w *Writer, base, outside string) {
	t.Helper()
	root := t.TempDir()
	base = filepath.Join(root, "run/kata-containers/shared/containers")
	outside = filepath.Join(root, "outside")
	for _, d := range []string{base, outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return New(base), base, outside
}

// tree lists everything below dir.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	if err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			out = append(out, strings.TrimPrefix(p, dir))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func TestCopyFileInChunks(t *testing.T) {
	w, base, _ := setup(t)
	p := filepath.Join(base, "sb/c1-hash-resolv.conf")
	content := []byte("nameserver 10.0.0.1\nsearch svc.cluster.local\n")
	half := len(content) / 2
	req := Request{Path: p, FileSize: int64(len(content)), FileMode: unix.S_IFREG | 0o640, DirMode: unix.S_IFDIR | 0o750, UID: 1000, GID: 2000}
	req.Data = content[:half]
	if err := w.Copy(req); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("file visible before all chunks arrived")
	}
	req.Offset, req.Data = int64(half), content[half:]
	if err := w.Copy(req); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || string(got) != string(content) {
		t.Fatalf("content %q %v", got, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o640 || st.Uid != 1000 || st.Gid != 2000 {
		t.Fatalf("file mode %o uid %d gid %d", st.Mode&0o7777, st.Uid, st.Gid)
	}
	if err := unix.Stat(filepath.Dir(p), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o750 || st.Uid != 1000 {
		t.Fatalf("parent mode %o uid %d", st.Mode&0o7777, st.Uid)
	}
	if slices.ContainsFunc(tree(t, base), func(s string) bool { return strings.HasSuffix(s, tmpSuffix) }) {
		t.Fatal("temporary file left")
	}
}

func TestCopyDirectoryAndSymlink(t *testing.T) {
	w, base, _ := setup(t)
	dir := filepath.Join(base, "sb/configmap/..2026_01")
	if err := w.Copy(Request{Path: dir, FileMode: unix.S_IFDIR | 0o755, DirMode: 0o755, UID: -1, GID: -1}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		t.Fatalf("dir: %v", err)
	}
	link := filepath.Join(base, "sb/configmap/..data")
	if err := w.Copy(Request{Path: link, FileMode: unix.S_IFLNK | 0o777, Data: []byte("..2026_01"), UID: -1, GID: -1}); err != nil {
		t.Fatal(err)
	}
	if target, err := os.Readlink(link); err != nil || target != "..2026_01" {
		t.Fatalf("symlink %q %v", target, err)
	}
	// Replacing a symlink (the kubelet's atomic update) works.
	if err := w.Copy(Request{Path: link, FileMode: unix.S_IFLNK | 0o777, Data: []byte("..2026_02"), UID: -1, GID: -1}); err != nil {
		t.Fatal(err)
	}
	if target, _ := os.Readlink(link); target != "..2026_02" {
		t.Fatalf("symlink not replaced: %q", target)
	}
}

func TestCopyFileEscapesRefused(t *testing.T) {
	w, base, outside := setup(t)
	plant := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// A container's rootfs lives below the shared dir: it can plant these.
	plant(os.Symlink(outside, filepath.Join(base, "linkdir")))
	plant(os.MkdirAll(filepath.Join(base, "c1"), 0o755))
	plant(os.WriteFile(filepath.Join(outside, "victim"), []byte("original"), 0o644))
	plant(os.Symlink(filepath.Join(outside, "victim"), filepath.Join(base, "c1/.f"+tmpSuffix)))
	plant(os.Symlink(outside, filepath.Join(base, "c1/dirlink")))
	plant(os.WriteFile(filepath.Join(base, "c1/plain"), nil, 0o644))
	baseBefore, outsideBefore := tree(t, base), tree(t, outside)

	file := func(p string) Request {
		return Request{Path: p, FileSize: 4, FileMode: unix.S_IFREG | 0o644, DirMode: 0o755, UID: -1, GID: -1, Data: []byte("evil")}
	}
	cases := []struct {
		name string
		req  Request
		code error
	}{
		{"dotdot", file(base + "/../../outside/evil"), errdefs.ErrInvalidArgument},
		{"dotdot inside", file(base + "/c1/../../../outside/evil"), errdefs.ErrInvalidArgument},
		{"absolute outside", file(outside + "/evil"), errdefs.ErrInvalidArgument},
		{"base prefix trick", file(base + "-evil/x"), errdefs.ErrInvalidArgument},
		{"base itself", file(base), errdefs.ErrInvalidArgument},
		{"relative", file("c1/evil"), errdefs.ErrInvalidArgument},
		{"trailing slash", file(base + "/c1/evil/"), errdefs.ErrInvalidArgument},
		{"NUL", file(base + "/c1/ev\x00il"), errdefs.ErrInvalidArgument},
		{"symlinked parent", file(base + "/linkdir/evil"), errdefs.ErrPermissionDenied},
		{"symlinked parent deeper", file(base + "/linkdir/new/evil"), errdefs.ErrPermissionDenied},
		{"symlinked parent below", file(base + "/c1/dirlink/evil"), errdefs.ErrPermissionDenied},
		{"file as parent", file(base + "/c1/plain/evil"), errdefs.ErrPermissionDenied},
		{"planted temp symlink", file(base + "/c1/f"), errdefs.ErrPermissionDenied},
		{"dir over symlink", Request{Path: base + "/c1/dirlink", FileMode: unix.S_IFDIR | 0o777, UID: -1, GID: -1}, errdefs.ErrPermissionDenied},
		{"symlink target dotdot", Request{Path: base + "/c1/l", FileMode: unix.S_IFLNK | 0o777, Data: []byte("../../../outside/victim"), UID: -1, GID: -1}, errdefs.ErrInvalidArgument},
		{"symlink target absolute", Request{Path: base + "/c1/l", FileMode: unix.S_IFLNK | 0o777, Data: []byte("/etc/shadow"), UID: -1, GID: -1}, errdefs.ErrInvalidArgument},
		{"device node", Request{Path: base + "/c1/dev", FileMode: unix.S_IFBLK | 0o600, UID: -1, GID: -1}, errdefs.ErrInvalidArgument},
		{"chunk past size", Request{Path: base + "/c1/x", FileSize: 2, FileMode: unix.S_IFREG | 0o644, Data: []byte("abc"), UID: -1, GID: -1}, errdefs.ErrInvalidArgument},
		{"name too long for its temporary file", file(base + "/c1/" + strings.Repeat("n", 250)), errdefs.ErrInvalidArgument},
		{"negative offset", Request{Path: base + "/c1/x", FileSize: 2, Offset: -1, FileMode: unix.S_IFREG | 0o644, Data: []byte("a"), UID: -1, GID: -1}, errdefs.ErrInvalidArgument},
	}
	for _, c := range cases {
		err := w.Copy(c.req)
		if errdefs.KindOf(err) != c.code {
			t.Errorf("%s: got %v, want %v", c.name, err, c.code)
		}
	}
	if got := tree(t, base); !slices.Equal(got, baseBefore) {
		t.Errorf("shared dir changed:\nbefore %q\nafter  %q", baseBefore, got)
	}
	if got := tree(t, outside); !slices.Equal(got, outsideBefore) {
		t.Errorf("outside changed: %q", got)
	}
	if b, _ := os.ReadFile(filepath.Join(outside, "victim")); string(b) != "original" {
		t.Errorf("victim overwritten: %q", b)
	}

	// A symlink as the final component is replaced, not followed.
	plant(os.Symlink(filepath.Join(outside, "victim"), filepath.Join(base, "c1/target")))
	if err := w.Copy(file(base + "/c1/target")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(outside, "victim")); string(b) != "original" {
		t.Errorf("write followed the final symlink: %q", b)
	}
	if fi, _ := os.Lstat(filepath.Join(base, "c1/target")); fi.Mode()&fs.ModeSymlink != 0 {
		t.Error("final symlink not replaced by the file")
	}
}

func TestRelPath(t *testing.T) {
	base := "/run/kata-containers/shared/containers"
	if rel, err := RelPath(base, base+"/a/b"); err != nil || rel != "a/b" {
		t.Fatalf("%q %v", rel, err)
	}
	for _, p := range []string{"", base, base + "/", base + "/..", base + "/a/./b", base + "//a", "/run/kata-containers/shared/containersX/a"} {
		if _, err := RelPath(base, p); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
}
