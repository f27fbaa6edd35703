package storage

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/internal/testroot"
)

// mountTable returns this process's mount table without the fields that
// change on their own, for before/after comparisons.
func mountTable(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(line); foreignTmp != "" && len(f) > 4 && isForeignTemp(f[4]) {
			continue // another process's, and it may vanish (TestMain)
		}
		lines = append(lines, line)
	}
	slices.Sort(lines)
	return lines
}

// isForeignTemp reports whether a mount point lies in the machine's temp
// directory but outside this process's own (TMPDIR).
func isForeignTemp(mountPoint string) bool {
	own := filepath.Clean(os.TempDir())
	under := func(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	return under(mountPoint, foreignTmp) && !under(mountPoint, own)
}

// assertMountsUnchanged fails the test when the mount table differs from
// before.
func assertMountsUnchanged(t *testing.T, before []string) {
	t.Helper()
	after := mountTable(t)
	if !slices.Equal(before, after) {
		var added, removed []string
		for _, l := range after {
			if !slices.Contains(before, l) {
				added = append(added, l)
			}
		}
		for _, l := range before {
			if !slices.Contains(after, l) {
				removed = append(removed, l)
			}
		}
		t.Fatalf("mount table changed:\nadded: %q\nremoved: %q", added, removed)
	}
}

func mountAt(t *testing.T, path string) (fstype, superOpts string, ok bool) {
	t.Helper()
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 10 || f[4] != path {
			continue
		}
		i := slices.Index(f, "-")
		fstype, superOpts, ok = f[i+1], f[i+3], true
	}
	return
}

// must fails the test when a set-up step (or a stat an assertion reads)
// fails.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func newManager(t *testing.T) (*Manager, string) {
	t.Helper()
	root := t.TempDir()
	m := New(Options{StateRoot: filepath.Join(root, "run")})
	t.Cleanup(func() {
		if err := m.ReleaseAll(context.Background()); err != nil {
			t.Errorf("ReleaseAll: %v", err)
		}
	})
	return m, root
}

func TestParseOptions(t *testing.T) {
	mo, err := ParseOptions([]string{"ro", "nosuid", "nodev", "size=64m", "rw", "rbind", "rslave", "io.katacontainers.fs-opt.overlay-rw", "", "mode=1777"})
	if err != nil {
		t.Fatal(err)
	}
	if want := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_BIND | unix.MS_REC); mo.Flags != want {
		t.Errorf("flags %#x, want %#x", mo.Flags, want)
	}
	if mo.Propagation != unix.MS_SLAVE|unix.MS_REC {
		t.Errorf("propagation %#x", mo.Propagation)
	}
	if got := mo.DataString(); got != "size=64m,mode=1777" {
		t.Errorf("data %q", got)
	}
	if _, err := ParseOptions([]string{"a\x00b"}); err == nil {
		t.Error("NUL accepted")
	}
	if _, err := ParseOptions([]string{strings.Repeat("x", 5000)}); err == nil {
		t.Error("oversized data accepted")
	}
	for _, o := range []string{"remount", "move"} {
		if _, err := ParseOptions([]string{"size=1m", o}); err == nil {
			t.Errorf("%s accepted", o)
		}
	}
}

// Storage.options make a new mount; they must not reach a mount that
// exists (remount, move) or, for drivers whose source is a tag or a pseudo
// name, turn the source into a guest path (bind).
func TestMountRefusesOptionsActingOnExistingMounts(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	run := m.StateRoot()
	// A tmpfs the agent did not mount, where storages may go.
	foreign := filepath.Join(run, "sandbox/ephemeral/foreign")
	must(t, os.MkdirAll(foreign, 0o755))
	if err := unix.Mount("tmpfs", foreign, "tmpfs", unix.MS_NOSUID, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(foreign, unix.MNT_DETACH) })
	secret := filepath.Join(root, "secret")
	must(t, os.MkdirAll(secret, 0o700))
	must(t, os.WriteFile(filepath.Join(secret, "key"), []byte("k"), 0o600))
	before := mountTable(t)
	for _, tc := range []struct {
		name string
		v    Volume
	}{
		{"remount an existing tmpfs", Volume{Driver: DriverEphemeral, MountPoint: foreign, Options: []string{"remount", "size=8m"}}},
		{"remount read-write", Volume{Driver: DriverVirtioFS, Source: "tag", MountPoint: foreign, Options: []string{"remount", "rw"}}},
		{"move", Volume{Driver: Driver9P, Source: foreign, MountPoint: filepath.Join(run, "sandbox/storage/moved"), Options: []string{"move"}}},
		{"ephemeral bind of a guest dir", Volume{Driver: DriverEphemeral, Source: secret, MountPoint: filepath.Join(run, "sandbox/ephemeral/eph"), Options: []string{"bind"}}},
		{"virtio-fs rbind", Volume{Driver: DriverVirtioFS, Source: secret, MountPoint: filepath.Join(run, "sandbox/storage/vfs"), Options: []string{"rbind"}}},
		{"overlay bind", Volume{Driver: DriverOverlayFS, Source: secret, MountPoint: filepath.Join(run, "shared/containers/c/rootfs"), Options: []string{"bind"}}},
	} {
		err := m.MountVolumes(context.Background(), "c", []Volume{tc.v})
		if errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", tc.name, err)
		}
	}
	assertMountsUnchanged(t, before)
	if _, opts, _ := mountAt(t, foreign); !strings.Contains(opts, "size=1024k") {
		t.Fatalf("foreign tmpfs changed: %s", opts)
	}
	for _, d := range []string{"sandbox/storage", "sandbox/ephemeral/eph", "shared"} {
		if _, err := os.Lstat(filepath.Join(run, d)); err == nil {
			t.Errorf("refused request left %s behind", d)
		}
	}
	if len(m.Mounted()) != 0 {
		t.Fatalf("held after refused requests: %v", m.Mounted())
	}
}

func TestEphemeralTmpfsCreatesAndRemovesMountPoint(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	before := mountTable(t)
	mp := filepath.Join(root, "run/sandbox/ephemeral/cache")
	err := m.MountVolumes(context.Background(), "c1", []Volume{{
		Driver: DriverEphemeral, Source: "tmpfs", FSType: "tmpfs", MountPoint: mp,
		Options: []string{"size=1m", "fsgid=2345", "nosuid"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	fstype, opts, ok := mountAt(t, mp)
	if !ok || fstype != "tmpfs" || !strings.Contains(opts, "size=1024k") {
		t.Fatalf("mount at %s: %q %q %v", mp, fstype, opts, ok)
	}
	var st unix.Stat_t
	if err := unix.Stat(mp, &st); err != nil {
		t.Fatal(err)
	}
	if st.Gid != 2345 || st.Mode&unix.S_ISGID == 0 || st.Mode&0o060 != 0o060 {
		t.Fatalf("fsgid not applied: gid %d mode %o", st.Gid, st.Mode)
	}
	if err := m.Release(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	assertMountsUnchanged(t, before)
	if _, err := os.Stat(filepath.Join(root, "run")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("created directories left behind: %v", err)
	}
}

func TestHugetlbfsReservesPages(t *testing.T) {
	testroot.Require(t)
	nr := "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
	orig, err := os.ReadFile(nr)
	if err != nil {
		t.Skipf("no 2 MiB hugepages: %v", err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(nr, orig, 0); err != nil {
			t.Errorf("restore %s: %v", nr, err)
		}
	})
	if err := os.WriteFile(nr, []byte("0"), 0); err != nil {
		t.Skipf("cannot reset hugepages: %v", err)
	}
	m, root := newManager(t)
	before := mountTable(t)
	mp := filepath.Join(root, "run/sandbox/ephemeral/huge")
	err = m.MountVolumes(context.Background(), "c1", []Volume{{
		Driver: DriverEphemeral, Source: "nodev", FSType: "hugetlbfs", MountPoint: mp,
		Options: []string{"pagesize=2M", "size=4M"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if fstype, opts, ok := mountAt(t, mp); !ok || fstype != "hugetlbfs" || !strings.Contains(opts, "pagesize=2M") {
		t.Fatalf("mount at %s: %q %q", mp, fstype, opts)
	}
	b, _ := os.ReadFile(nr)
	if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); n < 2 {
		t.Fatalf("nr_hugepages = %d, want >= 2", n)
	}
	if err := m.Release(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	assertMountsUnchanged(t, before)

	// A mount that fails after the pages were set aside gives them back
	// and leaves no mount.
	if err := os.WriteFile(nr, []byte("0"), 0); err != nil {
		t.Fatal(err)
	}
	err = m.MountVolumes(context.Background(), "c1", []Volume{{
		Driver: DriverEphemeral, FSType: "hugetlbfs", MountPoint: mp, Options: []string{"pagesize=2M", "size=4M", "uid=not-a-number"},
	}})
	if err == nil {
		t.Fatal("a hugetlbfs mount with a bad uid= succeeded")
	}
	b, _ = os.ReadFile(nr)
	if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); n != 0 {
		t.Fatalf("after the failed mount nr_hugepages = %d, want the 0 it was", n)
	}
	assertMountsUnchanged(t, before)

	// A size that is not a whole number of pages is refused up front.
	err = m.MountVolumes(context.Background(), "c1", []Volume{{
		Driver: DriverEphemeral, FSType: "hugetlbfs", MountPoint: mp, Options: []string{"pagesize=2M", "size=3M"},
	}})
	if errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
		t.Fatalf("got %v, want InvalidArgument", err)
	}
	assertMountsUnchanged(t, before)
}

func TestOverlayWritable(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	before := mountTable(t)
	lower := filepath.Join(root, "lower")
	must(t, os.MkdirAll(lower, 0o755))
	must(t, os.WriteFile(filepath.Join(lower, "base"), []byte("from lower"), 0o644))
	mp := filepath.Join(root, "run/shared/containers/c1/rootfs")
	err := m.MountVolumes(context.Background(), "c1", []Volume{{
		Driver: DriverOverlayFS, Source: "overlay", FSType: "overlay", MountPoint: mp,
		Options: []string{"lowerdir=" + lower, overlayRWOption},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(mp, "base")); err != nil || string(b) != "from lower" {
		t.Fatalf("lower file through overlay: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(mp, "new"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "run/c1/upper/new")); err != nil {
		t.Fatalf("write did not land in the upper dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(lower, "new")); err == nil {
		t.Fatal("write reached the lower dir")
	}
	if err := m.Release(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	assertMountsUnchanged(t, before)
	if _, err := os.Stat(filepath.Join(root, "run")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("overlay upper/work or mount point left: %v", err)
	}
}

// loopDevice makes an ext4 image on a loop device, detached at cleanup.
func loopDevice(t *testing.T, size string) (dev, image string) {
	t.Helper()
	for _, tool := range []string{"losetup", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s missing", tool)
		}
	}
	image = filepath.Join(t.TempDir(), "disk.img")
	if out, err := exec.Command("truncate", "-s", size, image).CombinedOutput(); err != nil {
		t.Fatalf("truncate: %v %s", err, out)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", image).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	out, err := exec.Command("losetup", "--find", "--show", image).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v %s", dev, err, out)
		}
	})
	return dev, image
}

func TestBlkDevPathOnLoopDevice(t *testing.T) {
	testroot.Require(t)
	dev, _ := loopDevice(t, "32M")
	m, root := newManager(t)
	before := mountTable(t)
	mp := filepath.Join(root, "run/sandbox/storage/vol")
	err := m.MountVolumes(context.Background(), "c1", []Volume{{
		Driver: DriverBlk, Source: dev, FSType: "ext4", MountPoint: mp, Options: []string{"nodev"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if fstype, _, ok := mountAt(t, mp); !ok || fstype != "ext4" {
		t.Fatalf("mount at %s: %q", mp, fstype)
	}
	if err := os.WriteFile(filepath.Join(mp, "data"), []byte("persist"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	assertMountsUnchanged(t, before)

	// The data is on the device: mount it again read-only and read it back.
	if err := m.MountVolumes(context.Background(), "c2", []Volume{{
		Driver: DriverBlk, Source: dev, FSType: "ext4", MountPoint: mp, Options: []string{"ro"},
	}}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(mp, "data")); err != nil || string(b) != "persist" {
		t.Fatalf("read back %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(mp, "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Fatalf("write on ro mount: %v", err)
	}
	if err := m.Release(context.Background(), "c2"); err != nil {
		t.Fatal(err)
	}
	assertMountsUnchanged(t, before)

	// A raw block volume: Kata's runtime sends fstype and option "bind",
	// which binds the checked device node itself onto a file.
	node := filepath.Join(root, "run/sandbox/storage/raw")
	if err := m.MountVolumes(context.Background(), "c3", []Volume{{
		Driver: DriverBlk, Source: dev, FSType: "bind", MountPoint: node, Options: []string{"bind"},
	}}); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(node, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		t.Fatalf("bound node %s: mode %#o %v", node, st.Mode, err)
	}
	if err := m.Release(context.Background(), "c3"); err != nil {
		t.Fatal(err)
	}
	assertMountsUnchanged(t, before)
}

func TestRefcountAcrossTwoContainers(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	before := mountTable(t)
	mp := filepath.Join(root, "run/sandbox/shm")
	vol := Volume{Driver: DriverEphemeral, Source: "shm", FSType: "tmpfs", MountPoint: mp}
	if err := m.MountVolumes(context.Background(), "a", []Volume{vol}); err != nil {
		t.Fatal(err)
	}
	// The same mount point spelled the way Kata's runtime spells the shared
	// directory, with a trailing slash, is the same mount.
	vol.MountPoint = mp + "/"
	if err := m.MountVolumes(context.Background(), "b", []Volume{vol}); err != nil {
		t.Fatal(err)
	}
	if got := m.Mounted()[mp]; got != 2 {
		t.Fatalf("refcount %d, want 2", got)
	}
	// One tmpfs, not two stacked.
	if n := strings.Count(strings.Join(mountTable(t), "\n"), " "+mp+" "); n != 1 {
		t.Fatalf("%d mounts at %s, want 1", n, mp)
	}
	must(t, os.WriteFile(filepath.Join(mp, "f"), []byte("x"), 0o644))
	if err := m.Release(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(mp, "f")); err != nil {
		t.Fatalf("mount went away while b still uses it: %v", err)
	}
	if err := m.Release(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	assertMountsUnchanged(t, before)
	if len(m.Mounted()) != 0 {
		t.Fatalf("manager still holds %v", m.Mounted())
	}
}

func TestSharedLivesUntilReleaseAll(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	before := mountTable(t)
	mp := filepath.Join(root, "run/sandbox/ephemeral/shared")
	if err := m.MountVolumes(context.Background(), "c1", []Volume{{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: mp, Shared: true}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := mountAt(t, mp); !ok {
		t.Fatal("shared storage unmounted when its container went")
	}
	if err := m.ReleaseAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertMountsUnchanged(t, before)
}

// Rollback undoes a failed request's storages, shared ones included when
// that request mounted them; shared volumes another request mounted, or
// that outlived the container that mounted them, stay until ReleaseAll.
func TestRollbackUndoesSharedVolumesOfTheFailedRequest(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	before := mountTable(t)
	vol := func(name string) Volume {
		return Volume{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(root, "run/sandbox/ephemeral", name), Shared: true}
	}
	held := func(v Volume) bool { _, ok := m.Mounted()[v.MountPoint]; return ok }
	s1, s2, s3 := vol("s1"), vol("s2"), vol("s3")
	if err := m.MountVolumes(context.Background(), "a", []Volume{s1}); err != nil {
		t.Fatal(err)
	}
	if err := m.Rollback(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if held(s1) {
		t.Fatal("a shared volume mounted by the failed request stayed")
	}

	// s2 is mounted by b and outlives it; c's failed request uses it and
	// mounts s3.
	if err := m.MountVolumes(context.Background(), "b", []Volume{s2}); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	if err := m.MountVolumes(context.Background(), "c", []Volume{s2, s3}); err != nil {
		t.Fatal(err)
	}
	if err := m.Rollback(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	if !held(s2) || held(s3) {
		t.Fatalf("after c's rollback: s2 held %v (want true), s3 held %v (want false)", held(s2), held(s3))
	}
	// b's id comes back for another container whose create fails: s2 was
	// mounted by the earlier b, and stays.
	if err := m.MountVolumes(context.Background(), "b", []Volume{s2}); err != nil {
		t.Fatal(err)
	}
	if err := m.Rollback(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	if !held(s2) {
		t.Fatal("the rollback of a reused owner id took a shared volume its earlier namesake mounted")
	}
	if err := m.ReleaseAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertMountsUnchanged(t, before)
}

func TestFSGroup(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	mp := filepath.Join(root, "run/sandbox/local/vol")
	// A local volume (a plain directory) that already holds files, as a
	// restored volume would.
	if err := m.MountVolumes(context.Background(), "", []Volume{{Driver: DriverLocal, MountPoint: mp, Options: []string{"mode=0750"}}}); err != nil {
		t.Fatal(err)
	}
	must(t, os.MkdirAll(filepath.Join(mp, "sub"), 0o700))
	must(t, os.WriteFile(filepath.Join(mp, "sub/file"), []byte("x"), 0o600))
	must(t, os.Symlink("/etc/passwd", filepath.Join(mp, "link")))
	var pw unix.Stat_t
	must(t, unix.Stat("/etc/passwd", &pw))

	tmpfs := filepath.Join(root, "run/sandbox/ephemeral/tmpfs")
	err := m.MountVolumes(context.Background(), "c1", []Volume{
		{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: tmpfs, FSGroup: &FSGroup{GID: 3000}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := applyFSGroup(m.log, m.StateRoot(), mp, FSGroup{GID: 3000}, false, nil); err != nil {
		t.Fatal(err)
	}
	for path, wantMode := range map[string]uint32{
		mp: 0o750 | 0o660 | 0o110 | unix.S_ISGID, filepath.Join(mp, "sub"): 0o700 | 0o660 | 0o110 | unix.S_ISGID,
		filepath.Join(mp, "sub/file"): 0o660, tmpfs: 0o660 | 0o110 | unix.S_ISGID,
	} {
		var st unix.Stat_t
		must(t, unix.Stat(path, &st))
		if st.Gid != 3000 || st.Mode&wantMode != wantMode {
			t.Errorf("%s: gid %d mode %o, want gid 3000 and bits %o", path, st.Gid, st.Mode&0o7777, wantMode)
		}
	}
	var after unix.Stat_t
	must(t, unix.Stat("/etc/passwd", &after))
	if after.Gid != pw.Gid || after.Mode != pw.Mode {
		t.Fatal("fs_group followed a symlink out of the volume")
	}

	// OnRootMismatch: the root already matches, so a new file below is not
	// touched.
	must(t, os.WriteFile(filepath.Join(mp, "later"), nil, 0o600))
	must(t, os.Chown(filepath.Join(mp, "later"), 0, 0)) // the setgid root would hand it 3000
	if err := applyFSGroup(m.log, m.StateRoot(), mp, FSGroup{GID: 3000, OnRootMismatch: true}, false, nil); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	must(t, unix.Stat(filepath.Join(mp, "later"), &st))
	if st.Gid == 3000 {
		t.Fatal("OnRootMismatch walked a volume whose root already matched")
	}
	// Always walks.
	if err := applyFSGroup(m.log, m.StateRoot(), mp, FSGroup{GID: 3000}, false, nil); err != nil {
		t.Fatal(err)
	}
	must(t, unix.Stat(filepath.Join(mp, "later"), &st))
	if st.Gid != 3000 {
		t.Fatal("Always did not walk")
	}
}

func TestLocalVolumeModeAndCleanup(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	mp := filepath.Join(root, "run/shared/containers/sb/rootfs/local/scratch")
	if err := m.MountVolumes(context.Background(), "c1", []Volume{{Driver: DriverLocal, MountPoint: mp, Options: []string{"mode=0770", "fsgid=4000"}}}); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(mp, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o777 != 0o770 || st.Gid != 4000 || st.Mode&unix.S_ISGID == 0 {
		t.Fatalf("mode %o gid %d", st.Mode&0o7777, st.Gid)
	}
	must(t, os.WriteFile(filepath.Join(mp, "data"), []byte("x"), 0o644))
	if err := m.Release(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "run")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("local volume left: %v", err)
	}
}

func TestFailuresLeaveNothing(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	before := mountTable(t)
	good := Volume{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(root, "run/sandbox/ephemeral/good")}
	notBlock := filepath.Join(root, "plainfile")
	must(t, os.WriteFile(notBlock, nil, 0o644))
	cases := []struct {
		name  string
		vols  []Volume
		code  error
		owner string
	}{
		{"unknown driver", []Volume{good, {Driver: "floppy", MountPoint: filepath.Join(root, "run/sandbox/ephemeral/b")}}, errdefs.ErrInvalidArgument, ""},
		{"relative mount point", []Volume{{Driver: DriverEphemeral, MountPoint: "run/x"}}, errdefs.ErrInvalidArgument, ""},
		{"root mount point", []Volume{{Driver: DriverEphemeral, MountPoint: "/run/.."}}, errdefs.ErrInvalidArgument, ""},
		{"NUL in options", []Volume{{Driver: DriverEphemeral, MountPoint: root + "/run/sandbox/ephemeral/x", Options: []string{"size=1\x00"}}}, errdefs.ErrInvalidArgument, ""},
		{"second mount fails", []Volume{good, {Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(root, "run/sandbox/ephemeral/c"), Options: []string{"size=nonsense"}}}, nil, ""},
		{"virtio-fs tag missing", []Volume{good, {Driver: DriverVirtioFS, Source: "no-such-tag", FSType: "virtiofs", MountPoint: filepath.Join(root, "run/shared/containers")}}, nil, ""},
		{"blk not a block device", []Volume{good, {Driver: DriverBlk, Source: "/dev/null", FSType: "ext4", MountPoint: filepath.Join(root, "run/sandbox/storage/blk")}}, errdefs.ErrInvalidArgument, ""},
		{"blk missing device", []Volume{good, {Driver: DriverBlk, Source: "/dev/wren-none", FSType: "ext4", MountPoint: filepath.Join(root, "run/sandbox/storage/blk")}}, errdefs.ErrNotFound, ""},
		{"blk without fstype", []Volume{good, {Driver: DriverBlk, Source: "/dev/null", MountPoint: filepath.Join(root, "run/sandbox/storage/blk")}}, errdefs.ErrInvalidArgument, ""},
		{"blk PCI path without listener", []Volume{good, {Driver: DriverBlk, Source: "02/00", FSType: "ext4", MountPoint: filepath.Join(root, "run/sandbox/storage/blk")}}, errdefs.ErrFailedPrecondition, ""},
		{"scsi without listener", []Volume{good, {Driver: DriverSCSI, Source: "0:0", FSType: "ext4", MountPoint: filepath.Join(root, "run/sandbox/storage/blk")}}, errdefs.ErrFailedPrecondition, ""},
		{"mmioblk without listener", []Volume{good, {Driver: DriverMMIOBlk, Source: "/dev/vda", FSType: "ext4", MountPoint: filepath.Join(root, "run/sandbox/storage/blk")}}, errdefs.ErrFailedPrecondition, ""},
		{"nvdimm without listener", []Volume{good, {Driver: DriverNVDIMM, Source: "/dev/pmem0", FSType: "ext4", MountPoint: filepath.Join(root, "run/sandbox/storage/blk")}}, errdefs.ErrFailedPrecondition, ""},
		{"blk path outside /dev", []Volume{good, {Driver: DriverBlk, Source: notBlock, FSType: "ext4", MountPoint: filepath.Join(root, "run/sandbox/storage/blk")}}, errdefs.ErrInvalidArgument, ""},
		{"ephemeral bad type", []Volume{good, {Driver: DriverEphemeral, FSType: "ext4", MountPoint: filepath.Join(root, "run/sandbox/ephemeral/e")}}, errdefs.ErrInvalidArgument, ""},
		{"writable overlay without container", []Volume{{Driver: DriverOverlayFS, MountPoint: filepath.Join(root, "run/shared/containers/o/rootfs"), Options: []string{overlayRWOption, "lowerdir=/"}}}, errdefs.ErrInvalidArgument, "-"},
		{"overlay bad lowerdir", []Volume{good, {Driver: DriverOverlayFS, MountPoint: filepath.Join(root, "run/shared/containers/o/rootfs"), Options: []string{"lowerdir=" + root + "/missing"}}}, nil, ""},
		{"local bad mode", []Volume{good, {Driver: DriverLocal, MountPoint: filepath.Join(root, "run/sandbox/local/l"), Options: []string{"mode=999"}}}, errdefs.ErrInvalidArgument, ""},
		{"watchable outside its dir", []Volume{good, {Driver: DriverWatchableBind, Source: root, MountPoint: filepath.Join(root, "run/shared/containers/w")}}, errdefs.ErrInvalidArgument, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			owner := "c1"
			if c.owner == "-" {
				owner = ""
			}
			err := m.MountVolumes(context.Background(), owner, c.vols)
			if err == nil {
				t.Fatal("succeeded")
			}
			if got := errdefs.KindOf(err); got != c.code {
				t.Fatalf("code %v (%v), want %v", got, err, c.code)
			}
			assertMountsUnchanged(t, before)
			if _, err := os.Stat(filepath.Join(root, "run")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("directories left behind: %v", err)
			}
			if len(m.Mounted()) != 0 {
				t.Fatalf("manager holds %v", m.Mounted())
			}
		})
	}
}

func TestFailedRequestKeepsOtherOwnersMounts(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	shared := Volume{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(root, "run/sandbox/shm")}
	if err := m.MountVolumes(context.Background(), "a", []Volume{shared}); err != nil {
		t.Fatal(err)
	}
	err := m.MountVolumes(context.Background(), "b", []Volume{shared, {Driver: "nope", MountPoint: root + "/x"}})
	if errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
		t.Fatalf("got %v", err)
	}
	err = m.MountVolumes(context.Background(), "b", []Volume{shared, {Driver: DriverBlk, Source: "/dev/null", FSType: "ext4", MountPoint: root + "/run/sandbox/storage/x"}})
	if err == nil {
		t.Fatal("succeeded")
	}
	if got := m.Mounted()[shared.MountPoint]; got != 1 {
		t.Fatalf("refcount after b's failed request: %d, want 1", got)
	}
	if _, _, ok := mountAt(t, shared.MountPoint); !ok {
		t.Fatal("a's mount went away")
	}
}

// TestSharedVolumeWithFSGroup mounts a shared volume with an fs_group (as
// CreateSandbox sends the sandbox's shm): the group is applied, and the
// volume outlives its owner's release.
func TestSharedVolumeWithFSGroup(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	before := mountTable(t)
	mp := filepath.Join(root, "run/sandbox/shm")
	err := m.MountVolumes(context.Background(), "", []Volume{{
		Driver: DriverEphemeral, Source: "shm", FSType: "tmpfs", MountPoint: mp, Options: []string{"size=1m"},
		FSGroup: &FSGroup{GID: 77, OnRootMismatch: true}, Shared: true,
	}})
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	must(t, unix.Stat(mp, &st))
	if st.Gid != 77 {
		t.Fatalf("fs_group not applied: gid %d", st.Gid)
	}
	if err := m.Release(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := mountAt(t, mp); !ok {
		t.Fatal("shared storage released with its owner")
	}
	if err := m.ReleaseAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertMountsUnchanged(t, before)
}

func TestConcurrentMountsOfOneMountPoint(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	before := mountTable(t)
	mp := filepath.Join(root, "run/sandbox/shm")
	owners := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	errs := make(chan error, len(owners))
	for _, o := range owners {
		go func() {
			errs <- m.MountVolumes(context.Background(), o, []Volume{{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: mp}})
		}()
	}
	for range owners {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := m.Mounted()[mp]; got != len(owners) {
		t.Fatalf("refcount %d, want %d", got, len(owners))
	}
	if n := strings.Count(strings.Join(mountTable(t), "\n"), " "+mp+" "); n != 1 {
		t.Fatalf("%d mounts stacked at %s", n, mp)
	}
	for _, o := range owners {
		go func() { errs <- m.Release(context.Background(), o) }()
	}
	for range owners {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	assertMountsUnchanged(t, before)
	if len(m.Mounted()) != 0 {
		t.Fatalf("left %v", m.Mounted())
	}
}

// A bind of a file source gets a file mount point; "ro" on a bind needs a
// second, remount call to take effect. The block drivers are the ones
// that bind (a raw block volume's device node, a file).
func TestReadOnlyFileBind(t *testing.T) {
	testroot.Require(t)
	dev, _ := loopDevice(t, "8M")
	m, root := newManager(t)
	before := mountTable(t)
	mp := filepath.Join(root, "run/sandbox/storage/raw")
	err := m.MountVolumes(context.Background(), "c1", []Volume{{Driver: DriverBlk, Source: dev, FSType: "bind", MountPoint: mp, Options: []string{"bind", "ro"}}})
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(mp, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		t.Fatalf("mount point %s is not the bound device node: mode %#o %v", mp, st.Mode, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(mp, &fs); err != nil || fs.Flags&unix.ST_RDONLY == 0 {
		t.Fatalf("bind is not read-only: flags %#x %v", fs.Flags, err)
	}
	if err := m.Release(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	assertMountsUnchanged(t, before)
	if _, err := os.Stat(filepath.Join(root, "run")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file mount point left: %v", err)
	}
}
