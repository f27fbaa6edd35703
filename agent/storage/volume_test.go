package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/errdefs"

	"github.com/wren-vm/wren/internal/testroot"
)

func TestVolumeStatsOnTmpfs(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	mp := filepath.Join(root, "run/sandbox/storage/vol")
	if err := m.MountVolumes(context.Background(), "c", []Volume{{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: mp, Options: []string{"size=4m", "nr_inodes=100"}}}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mp, "f"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	b, in, err := VolumeStats(mp)
	if err != nil {
		t.Fatal(err)
	}
	if b.Total != 4<<20 || b.Used < 1<<20 || b.Available+b.Used != b.Total {
		t.Fatalf("bytes %+v", b)
	}
	if in.Total != 100 || in.Used < 2 || in.Available+in.Used != in.Total {
		t.Fatalf("inodes %+v", in)
	}
	if _, _, err := VolumeStats(filepath.Join(root, "missing")); errdefs.KindOf(err) != errdefs.ErrNotFound {
		t.Fatalf("missing: %v", err)
	}
	if _, _, err := VolumeStats("rel"); errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
		t.Fatalf("relative: %v", err)
	}
}

// hasCapSysResource reports whether this process may grow a mounted ext4
// (EXT4_IOC_RESIZE_FS needs CAP_SYS_RESOURCE). The agent has it in the
// guest; the sandbox this suite runs in may not.
func hasCapSysResource() bool {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			var caps uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%x", &caps); err != nil {
				return false
			}
			return caps&(1<<unix.CAP_SYS_RESOURCE) != 0
		}
	}
	return false
}

func TestResizeVolumeErrors(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	tmp := filepath.Join(root, "run/sandbox/ephemeral/tmp")
	if err := m.MountVolumes(context.Background(), "c", []Volume{{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: tmp}}); err != nil {
		t.Fatal(err)
	}
	if err := ResizeVolume(context.Background(), tmp, 0); errdefs.KindOf(err) != errdefs.ErrUnimplemented {
		t.Fatalf("tmpfs: %v", err)
	}
	if err := ResizeVolume(context.Background(), filepath.Join(root, "nothing"), 0); errdefs.KindOf(err) != errdefs.ErrNotFound {
		t.Fatalf("not mounted: %v", err)
	}
	if err := ResizeVolume(context.Background(), "rel/path", 0); errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
		t.Fatalf("relative: %v", err)
	}
}

func TestResizeVolumeGrowsExt4Online(t *testing.T) {
	testroot.Require(t)
	if _, err := exec.LookPath("resize2fs"); err != nil {
		t.Skip("resize2fs missing")
	}
	if !hasCapSysResource() {
		t.Skip("CAP_SYS_RESOURCE is not held here, so no online ext4 resize; the VM suite covers it")
	}
	dev, img := loopDevice(t, "32M")
	m, root := newManager(t)
	mp := filepath.Join(root, "run/sandbox/storage/vol")
	if err := m.MountVolumes(context.Background(), "c", []Volume{{Driver: DriverBlk, Source: dev, FSType: "ext4", MountPoint: mp}}); err != nil {
		t.Fatal(err)
	}
	before, _, _ := VolumeStats(mp)
	// The host grows the disk; the guest kernel sees the new capacity.
	if err := os.Truncate(img, 96<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("losetup", "-c", dev).CombinedOutput(); err != nil {
		t.Fatalf("losetup -c: %v %s", err, out)
	}
	if err := ResizeVolume(context.Background(), mp, 64<<20); err != nil {
		t.Fatal(err)
	}
	mid, _, _ := VolumeStats(mp)
	if err := ResizeVolume(context.Background(), mp, 0); err != nil {
		t.Fatal(err)
	}
	after, _, _ := VolumeStats(mp)
	if before.Total >= mid.Total || mid.Total >= after.Total || after.Total <= 80<<20 {
		t.Fatalf("sizes before %d, at 64M %d, grown %d", before.Total, mid.Total, after.Total)
	}
}

func swapoff(path string) error {
	p, _ := unix.BytePtrFromString(path)
	if _, _, errno := unix.Syscall(unix.SYS_SWAPOFF, uintptr(unsafe.Pointer(p)), 0, 0); errno != 0 {
		return errno
	}
	return nil
}

func TestSwaponFile(t *testing.T) {
	testroot.Require(t)
	if _, err := exec.LookPath("mkswap"); err != nil {
		t.Skip("mkswap missing")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "swap")
	if err := os.WriteFile(file, make([]byte, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkswap", file).CombinedOutput(); err != nil {
		t.Fatalf("mkswap: %v %s", err, out)
	}
	if err := Swapon(file); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := swapoff(file); err != nil {
			t.Errorf("swapoff: %v", err)
		}
	})
	swaps, _ := os.ReadFile("/proc/swaps")
	if !strings.Contains(string(swaps), file) {
		t.Fatalf("%s not in /proc/swaps:\n%s", file, swaps)
	}
	if err := Swapon(file); errdefs.KindOf(err) != errdefs.ErrAlreadyExists {
		t.Fatalf("second swapon: %v", err)
	}
	plain := filepath.Join(dir, "plain")
	must(t, os.WriteFile(plain, make([]byte, 1<<20), 0o600))
	if err := Swapon(plain); errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
		t.Fatalf("not a swap area: %v", err)
	}
	if err := Swapon(filepath.Join(dir, "none")); errdefs.KindOf(err) != errdefs.ErrNotFound {
		t.Fatalf("missing: %v", err)
	}
}

func TestUpdateEphemeralRemountsWithNewSize(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	mp := filepath.Join(root, "run/sandbox/ephemeral/cache")
	v := Volume{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: mp, Options: []string{"size=1m"}}
	if err := m.MountVolumes(context.Background(), "c", []Volume{v}); err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(filepath.Join(mp, "keep"), []byte("x"), 0o644))
	// What Kata's runtime sends after a memory hotplug.
	v.Options = []string{"remount", "size=2m", "fsgid=1234"}
	if err := m.UpdateEphemeral(context.Background(), []Volume{v}); err != nil {
		t.Fatal(err)
	}
	if _, opts, _ := mountAt(t, mp); !strings.Contains(opts, "size=2048k") {
		t.Fatalf("options after update: %s", opts)
	}
	if _, err := os.Stat(filepath.Join(mp, "keep")); err != nil {
		t.Fatal("remount lost the content")
	}
	if err := m.UpdateEphemeral(context.Background(), []Volume{{Driver: DriverLocal, MountPoint: mp}}); errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
		t.Fatalf("local: %v", err)
	}
	if err := m.UpdateEphemeral(context.Background(), []Volume{{Driver: DriverEphemeral, MountPoint: root + "/none"}}); errdefs.KindOf(err) != errdefs.ErrNotFound {
		t.Fatalf("not mounted: %v", err)
	}
	for _, opts := range [][]string{{"bind", "size=3m"}, {"rshared", "size=3m"}, {"move"}} {
		if err := m.UpdateEphemeral(context.Background(), []Volume{{Driver: DriverEphemeral, MountPoint: mp, Options: opts}}); errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
			t.Fatalf("update with %q: %v", opts, err)
		}
	}
	if _, opts, _ := mountAt(t, mp); !strings.Contains(opts, "size=2048k") {
		t.Fatalf("refused updates changed the mount: %s", opts)
	}
}

// UpdateEphemeralMounts names mount points; only the ephemeral tmpfs
// storages the manager mounted may be remounted, never another tmpfs of
// the guest (/run, /dev/shm, ...) or a storage of another driver.
func TestUpdateEphemeralLeavesOtherMountsAlone(t *testing.T) {
	testroot.Require(t)
	m, root := newManager(t)
	foreign := filepath.Join(root, "foreign")
	must(t, os.MkdirAll(foreign, 0o755))
	if err := unix.Mount("tmpfs", foreign, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(foreign, unix.MNT_DETACH) })
	ours := filepath.Join(root, "run/sandbox/ephemeral/cache")
	// A tmpfs stands in for virtio-fs (no virtiofsd here): what matters is
	// that the manager holds it under another driver.
	share := filepath.Join(root, "run/shared/containers/c1/rootfs")
	if err := m.MountVolumes(context.Background(), "c", []Volume{
		{Driver: DriverEphemeral, MountPoint: ours, Options: []string{"size=1m"}},
		{Driver: DriverVirtioFS, Source: "tmpfs", FSType: "tmpfs", MountPoint: share, Options: []string{"size=1m"}},
	}); err != nil {
		t.Fatal(err)
	}
	before := mountTable(t)
	update := func(mp string) Volume {
		return Volume{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: mp, Options: []string{"remount", "size=4m"}}
	}
	if err := m.UpdateEphemeral(context.Background(), []Volume{update(foreign)}); errdefs.KindOf(err) != errdefs.ErrNotFound || !strings.Contains(err.Error(), "mounted by the agent") {
		t.Fatalf("foreign tmpfs: %v", err)
	}
	if err := m.UpdateEphemeral(context.Background(), []Volume{update(foreign + "/")}); errdefs.KindOf(err) != errdefs.ErrNotFound {
		t.Fatalf("foreign tmpfs with a trailing slash: %v", err)
	}
	if err := m.UpdateEphemeral(context.Background(), []Volume{update(share)}); errdefs.KindOf(err) != errdefs.ErrInvalidArgument {
		t.Fatalf("virtio-fs storage: %v", err)
	}
	// Checked before anything is remounted: our own volume keeps its size
	// when a later entry of the same request is refused.
	if err := m.UpdateEphemeral(context.Background(), []Volume{update(ours), update(foreign)}); errdefs.KindOf(err) != errdefs.ErrNotFound {
		t.Fatalf("mixed request: %v", err)
	}
	assertMountsUnchanged(t, before)
	if _, opts, _ := mountAt(t, foreign); !strings.Contains(opts, "size=1024k") {
		t.Fatalf("foreign tmpfs was remounted: %s", opts)
	}
	if err := m.UpdateEphemeral(context.Background(), []Volume{update(ours)}); err != nil {
		t.Fatal(err)
	}
	if _, opts, _ := mountAt(t, ours); !strings.Contains(opts, "size=4096k") {
		t.Fatalf("own ephemeral not updated: %s", opts)
	}
	if err := m.Release(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	if err := m.UpdateEphemeral(context.Background(), []Volume{update(ours)}); errdefs.KindOf(err) != errdefs.ErrNotFound {
		t.Fatalf("released volume: %v", err)
	}
	if got := len(m.entries); got != 0 {
		t.Fatalf("%d entries left after release and refused updates", got)
	}
}

func TestTouchSharedMounts(t *testing.T) {
	testroot.Require(t)
	m, _ := newManager(t)
	mp := filepath.Join(SharedDir(m.StateRoot()), "c1", "rootfs")
	if err := m.MountVolumes(context.Background(), "c1", []Volume{{Driver: DriverEphemeral, FSType: "tmpfs", MountPoint: mp}}); err != nil {
		t.Fatal(err)
	}
	if err := m.TouchSharedMounts(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.TouchSharedMounts(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}
