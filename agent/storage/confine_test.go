package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/errdefs"

	"github.com/wren-vm/wren/internal/testroot"
)

// attrs is what a request may change on a path and must give back.
type attrs struct{ mode, uid, gid uint32 }

func attrsOf(t *testing.T, path string) attrs {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return attrs{st.Mode & 0o7777, st.Uid, st.Gid}
}

// snapshotAttrs records paths so that assertAttrs can tell what changed.
func snapshotAttrs(t *testing.T, paths ...string) map[string]attrs {
	t.Helper()
	m := map[string]attrs{}
	for _, p := range paths {
		m[p] = attrsOf(t, p)
	}
	return m
}

func assertAttrs(t *testing.T, want map[string]attrs) {
	t.Helper()
	for p, w := range want {
		if got := attrsOf(t, p); got != w {
			t.Errorf("%s: mode %o owner %d:%d, want mode %o owner %d:%d", p, got.mode, got.uid, got.gid, w.mode, w.uid, w.gid)
		}
	}
}

// resetAttrs puts paths back as snapshotted, so that one wrong case does
// not spill into the next.
func resetAttrs(t *testing.T, want map[string]attrs) {
	t.Helper()
	for p, w := range want {
		if err := unix.Lchown(p, int(w.uid), int(w.gid)); err != nil {
			t.Fatal(err)
		}
		if err := unix.Chmod(p, w.mode); err != nil {
			t.Fatal(err)
		}
	}
}

func mkdirs(t *testing.T, mode os.FileMode, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
	}
}

// Storages may be mounted only where Kata's runtime puts them, below the
// state root; everything else (the guest's /etc, the state root, the
// agent's own sandbox and bundle state, the watcher's tmpfs) is
// InvalidArgument and left exactly as it was. The paths outside the state
// root are in the test's temporary directory, so that an agent that gets
// this wrong changes nothing of the machine.
func TestMountPointsOutsideKataDirsRefused(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	sr := m.StateRoot()
	etc := filepath.Join(root, "etc")
	mkdirs(t, 0o755, etc, filepath.Join(sr, "sandbox"), filepath.Join(sr, "c1"), SharedDir(sr))
	resolv := filepath.Join(sr, "sandbox", "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 10.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	kept := snapshotAttrs(t, etc, sr, filepath.Join(sr, "sandbox"), resolv, filepath.Join(sr, "c1"), SharedDir(sr), filepath.Join(sr, "shared"))
	before := mountTable(t)
	mustNotExist := []string{
		filepath.Join(root, "run-other"), filepath.Join(sr, "sandbox", "ephemeral"), filepath.Join(sr, "c1", "rootfs"),
		filepath.Join(sr, ".libcontainer"), filepath.Join(SharedDir(sr), "watchable"), filepath.Join(sr, "other"),
	}

	cases := []struct {
		name string
		v    Volume
	}{
		{"outside the state root", Volume{Driver: DriverLocal, MountPoint: etc, Options: []string{"mode=4777"}}},
		{"dot-dot out of the state root", Volume{Driver: DriverLocal, MountPoint: sr + "/sandbox/local/../../../etc", Options: []string{"mode=4777"}}},
		{"a sibling sharing the state root's prefix", Volume{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(root, "run-other", "x")}},
		{"the state root", Volume{Driver: DriverLocal, MountPoint: sr, Options: []string{"mode=0777"}}},
		{"the sandbox directory", Volume{Driver: DriverLocal, MountPoint: filepath.Join(sr, "sandbox"), Options: []string{"mode=0777"}}},
		{"the sandbox's DNS file", Volume{Driver: DriverLocal, MountPoint: resolv, Options: []string{"mode=0666"}}},
		{"the ephemeral directory itself", Volume{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(sr, "sandbox", "ephemeral")}},
		{"a container bundle", Volume{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(sr, "c1", "rootfs")}},
		{"the libcontainer state", Volume{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(sr, ".libcontainer")}},
		{"an unknown directory below the state root", Volume{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(sr, "other")}},
		{"the shared directory for a local volume", Volume{Driver: DriverLocal, MountPoint: SharedDir(sr), Options: []string{"mode=0777"}}},
		{"the shared directory's parent for 9p", Volume{Driver: Driver9P, Source: "tag", MountPoint: filepath.Join(sr, "shared")}},
		{"the watcher's tmpfs", Volume{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(SharedDir(sr), "watchable")}},
		{"inside the watcher's tmpfs", Volume{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(SharedDir(sr), "watchable", "x")}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := m.MountVolumes(context.Background(), "c1", []Volume{c.v})
			if err == nil {
				// Undo it, so that the next case starts clean.
				if rerr := m.Release(context.Background(), "c1"); rerr != nil {
					t.Errorf("release: %v", rerr)
				}
			}
			if got := errdefs.KindOf(err); got != errdefs.ErrInvalidArgument {
				t.Errorf("code %v (%v), want InvalidArgument", got, err)
			}
			assertAttrs(t, kept)
			resetAttrs(t, kept)
			assertMountsUnchanged(t, before)
			for _, p := range mustNotExist {
				if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s exists after the request: %v", p, err)
					os.RemoveAll(p)
				}
			}
		})
	}
}

// The mount points Kata's runtime sends are accepted (tmpfs stands in for
// the block devices and the shared filesystem).
func TestMountPointsKataUsesAccepted(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	sr := m.StateRoot()
	before := mountTable(t)
	vols := []Volume{
		{Driver: DriverEphemeral, Source: "shm", FSType: "tmpfs", MountPoint: filepath.Join(sr, "sandbox", "shm")},
		{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(sr, "sandbox", "ephemeral", "cache")},
		{Driver: DriverLocal, MountPoint: filepath.Join(sr, "sandbox", "local", "scratch")},
		{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(sr, "sandbox", "storage", "MDI6MDA=")},
		{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(sr, "sandbox", "layers", "l1")},
		{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(SharedDir(sr), "c1", "rootfs")},
		{Driver: DriverLocal, MountPoint: filepath.Join(SharedDir(sr), "sb", "rootfs", "local", "data")},
	}
	if err := m.MountVolumes(context.Background(), "c1", vols); err != nil {
		t.Fatal(err)
	}
	if got := len(m.Mounted()); got != len(vols) {
		t.Fatalf("%d volumes held, want %d", got, len(vols))
	}
	if err := m.Release(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	assertMountsUnchanged(t, before)
	if _, err := os.Stat(filepath.Join(root, "run")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("directories left behind: %v", err)
	}
}

// The shared directory is filled by the host and holds the containers'
// root filesystems: a symlink there must not take a mount point (or the
// chmod of a local volume) out of the state root, whether it is on the
// way or the mount point itself.
func TestMountPointSymlinkOutRefused(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	sr := m.StateRoot()
	outside := filepath.Join(root, "outside")
	victim := filepath.Join(outside, "victim")
	mkdirs(t, 0o755, victim, filepath.Join(SharedDir(sr), "sb", "rootfs"))
	if err := os.Symlink(outside, filepath.Join(SharedDir(sr), "sb", "rootfs", "local")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(SharedDir(sr), "sb", "rootfs", "link")); err != nil {
		t.Fatal(err)
	}
	kept := snapshotAttrs(t, outside, victim)
	before := mountTable(t)
	for _, v := range []Volume{
		{Driver: DriverLocal, MountPoint: filepath.Join(SharedDir(sr), "sb", "rootfs", "local", "victim"), Options: []string{"mode=4777", "fsgid=4321"}},
		{Driver: DriverLocal, MountPoint: filepath.Join(SharedDir(sr), "sb", "rootfs", "link"), Options: []string{"mode=4777"}},
		{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(SharedDir(sr), "sb", "rootfs", "local", "new")},
		{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(SharedDir(sr), "sb", "rootfs", "link")},
	} {
		err := m.MountVolumes(context.Background(), "c1", []Volume{v})
		if err == nil {
			if rerr := m.Release(context.Background(), "c1"); rerr != nil {
				t.Errorf("release: %v", rerr)
			}
		}
		if got := errdefs.KindOf(err); got != errdefs.ErrInvalidArgument {
			t.Errorf("%s (%s): code %v (%v), want InvalidArgument", v.MountPoint, v.Driver, got, err)
		}
		assertAttrs(t, kept)
		resetAttrs(t, kept)
		assertMountsUnchanged(t, before)
		if _, err := os.Lstat(filepath.Join(outside, "new")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a mount point was made outside the state root: %v", err)
			os.RemoveAll(filepath.Join(outside, "new"))
		}
	}
}

// existingVolumeDir makes a directory with a file under the state root, as
// a local volume may find it, and returns them with their attributes.
func existingVolumeDir(t *testing.T, sr string) (dir, file string, kept map[string]attrs) {
	t.Helper()
	dir = filepath.Join(sr, "sandbox", "local", "pre")
	mkdirs(t, 0o750, dir)
	file = filepath.Join(dir, "data")
	if err := os.WriteFile(file, []byte("kept"), 0o640); err != nil {
		t.Fatal(err)
	}
	return dir, file, snapshotAttrs(t, dir, file)
}

// A failed request gives back the mode, group and fs_group changes it made
// to a directory that was there before it.
func TestExistingDirRestoredOnRollback(t *testing.T) {
	testroot.Require(t)
	m, _ := newManager(t)
	sr := m.StateRoot()
	dir, file, kept := existingVolumeDir(t, sr)
	before := mountTable(t)
	err := m.MountVolumes(context.Background(), "c1", []Volume{
		{Driver: DriverLocal, MountPoint: dir, Options: []string{"mode=4777", "fsgid=4321"}, FSGroup: &FSGroup{GID: 4321}},
		{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(sr, "sandbox", "ephemeral", "bad"), Options: []string{"size=nonsense"}},
	})
	if err == nil {
		t.Fatal("succeeded")
	}
	assertAttrs(t, kept)
	assertMountsUnchanged(t, before)
	if b, err := os.ReadFile(file); err != nil || string(b) != "kept" {
		t.Fatalf("the volume's content did not survive the rollback: %q %v", b, err)
	}
	if len(m.Mounted()) != 0 {
		t.Fatalf("manager holds %v", m.Mounted())
	}
}

// A local volume on a directory that was there before gives it back as it
// was when its last user goes.
func TestExistingDirRestoredOnRelease(t *testing.T) {
	testroot.Require(t)
	m, _ := newManager(t)
	dir, file, kept := existingVolumeDir(t, m.StateRoot())
	vol := Volume{Driver: DriverLocal, MountPoint: dir, Options: []string{"mode=0777", "fsgid=4321"}, FSGroup: &FSGroup{GID: 4321}}
	if err := m.MountVolumes(context.Background(), "c1", []Volume{vol}); err != nil {
		t.Fatal(err)
	}
	if a := attrsOf(t, dir); a.gid != 4321 || a.mode&unix.S_ISGID == 0 || a.mode&0o777 != 0o777 {
		t.Fatalf("local volume not applied: mode %o gid %d", a.mode, a.gid)
	}
	if a := attrsOf(t, file); a.gid != 4321 {
		t.Fatalf("fs_group not applied to %s: gid %d", file, a.gid)
	}
	if err := m.Release(context.Background(), "c1"); err != nil {
		t.Fatal(err)
	}
	assertAttrs(t, kept)
	if b, err := os.ReadFile(file); err != nil || string(b) != "kept" {
		t.Fatalf("the volume's content did not survive: %q %v", b, err)
	}
}

// After a volume is mounted, the host (or a container, through its rootfs
// in the shared directory) may swap a directory on its path for a symlink:
// tearing the volume down must then neither unmount another of the guest's
// mounts nor remove a tree elsewhere. It fails instead, and keeps the
// volume, until the path is sound again.
func TestTeardownResolvesBeneathAgain(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	shared := SharedDir(m.StateRoot())
	// Another mount of the guest and a tree of the guest, outside the
	// state root, at the names the volumes' paths end in.
	outside := filepath.Join(root, "outside")
	mkdirs(t, 0o755, filepath.Join(outside, "rootfs"), filepath.Join(outside, "x"))
	if err := os.WriteFile(filepath.Join(outside, "x", "keep"), []byte("guest"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", filepath.Join(outside, "rootfs"), "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(filepath.Join(outside, "rootfs"), unix.MNT_DETACH) })
	if err := m.MountVolumes(context.Background(), "c1", []Volume{
		{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: filepath.Join(shared, "c1", "rootfs")},
		{Driver: DriverLocal, MountPoint: filepath.Join(shared, "sb", "rootfs", "local", "x")},
	}); err != nil {
		t.Fatal(err)
	}
	swap := func(dir string) {
		if err := os.Rename(dir, dir+".moved"); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, dir); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(dir); _ = os.Rename(dir+".moved", dir) })
	}
	swap(filepath.Join(shared, "c1"))
	swap(filepath.Join(shared, "sb", "rootfs", "local"))

	if err := m.Release(context.Background(), "c1"); errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
		t.Errorf("release through a swapped symlink: %v, want InvalidArgument", err)
	}
	if fstype, _, ok := mountAt(t, filepath.Join(outside, "rootfs")); !ok || fstype != "tmpfs" {
		t.Errorf("the guest's mount at %s/rootfs went away", outside)
	}
	if b, err := os.ReadFile(filepath.Join(outside, "x", "keep")); err != nil || string(b) != "guest" {
		t.Errorf("the guest's tree at %s/x was removed: %q %v", outside, b, err)
	}
	if _, _, ok := mountAt(t, filepath.Join(shared, "c1.moved", "rootfs")); !ok {
		t.Errorf("the volume's tmpfs was lost track of")
	}
}
