package initd

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

type mountSpec struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	mode                   os.FileMode
}

// baseMounts are the kernel filesystems every guest needs, in order.
var baseMounts = []mountSpec{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", 0o755},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5", 0o755},
	{"shm", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", 0o1777},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", 0o755},
}

// EarlyMounts mounts proc, sysfs, devtmpfs, devpts, /dev/shm and /run under
// root ("" for "/") and points /dev/ptmx at the devpts instance. Targets
// already mounted are left alone, so a second call is harmless. Every mount
// is attempted; the error joins the failures.
func EarlyMounts(root string) error {
	var errs []error
	for _, m := range baseMounts {
		if err := mountOnce(root, m); err != nil {
			errs = append(errs, err)
		}
	}
	if err := ptmxSymlink(root); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func mountOnce(root string, m mountSpec) error {
	target := join(root, m.target)
	if err := os.MkdirAll(target, m.mode); err != nil {
		return fmt.Errorf("mount %s: %w", m.target, err)
	}
	if mounted, err := isMountPoint(target); err == nil && mounted {
		return nil
	}
	if err := unix.Mount(m.source, target, m.fstype, m.flags, m.data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
	}
	return nil
}

func ptmxSymlink(root string) error {
	ptmx := join(root, "/dev/ptmx")
	if target, err := os.Readlink(ptmx); err == nil && target == "pts/ptmx" {
		return nil
	}
	if err := os.Remove(ptmx); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("replace /dev/ptmx: %w", err)
	}
	if err := os.Symlink("pts/ptmx", ptmx); err != nil {
		return fmt.Errorf("symlink /dev/ptmx: %w", err)
	}
	return nil
}

// isMountPoint reports whether path is a mount point, by comparing its
// mount ID with its parent's (statx STATX_MNT_ID).
func isMountPoint(path string) (bool, error) {
	var st, parent unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &st); err != nil {
		return false, err
	}
	if err := unix.Statx(unix.AT_FDCWD, filepath.Dir(path), 0, unix.STATX_MNT_ID, &parent); err != nil {
		return false, err
	}
	if st.Mask&unix.STATX_MNT_ID == 0 {
		return false, errors.New("kernel reports no mount id")
	}
	return st.Mnt_id != parent.Mnt_id || path == "/", nil
}

// CgroupRoot is where cgroups are mounted.
const CgroupRoot = "/sys/fs/cgroup"

// MountCgroups mounts cgroup2 at /sys/fs/cgroup and enables every available
// controller for child groups, or with v1 a tmpfs holding one hierarchy per
// enabled controller (remounted read-only afterwards, as Kata does).
func MountCgroups(log *slog.Logger, root string, v1 bool) error {
	dir := join(root, CgroupRoot)
	if v1 {
		return mountCgroupV1(log, root, dir)
	}
	if err := mountOnce(root, mountSpec{"cgroup2", CgroupRoot, "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RELATIME, "nsdelegate", 0o755}); err != nil {
		return err
	}
	avail, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("cgroup2 controllers: %w", err)
	}
	var enabled, failed []string
	for _, c := range strings.Fields(string(avail)) {
		// One write per controller: a single failure would otherwise
		// leave all of them disabled.
		if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+c), 0); err != nil {
			failed = append(failed, c+": "+err.Error())
			continue
		}
		enabled = append(enabled, c)
	}
	log.Info("cgroup2 mounted", "path", CgroupRoot, "controllers", strings.Join(enabled, " "))
	if len(failed) > 0 {
		return fmt.Errorf("enable cgroup2 controllers: %s", strings.Join(failed, "; "))
	}
	return nil
}

// v1Controllers returns the enabled controllers listed in /proc/cgroups.
func v1Controllers(root string) ([]string, error) {
	f, err := os.Open(join(root, "/proc/cgroups"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || strings.HasPrefix(f[0], "#") || f[3] != "1" {
			continue
		}
		out = append(out, f[0])
	}
	return out, sc.Err()
}

func mountCgroupV1(log *slog.Logger, root, dir string) error {
	ctrls, err := v1Controllers(root)
	if err != nil {
		return fmt.Errorf("cgroup v1 controllers: %w", err)
	}
	if err := mountOnce(root, mountSpec{"tmpfs", CgroupRoot, "tmpfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=0755", 0o755}); err != nil {
		return err
	}
	var errs []error
	var mounted []string
	for _, c := range ctrls {
		if err := mountOnce(root, mountSpec{"cgroup", CgroupRoot + "/" + c, "cgroup", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RELATIME, c, 0o555}); err != nil {
			errs = append(errs, err)
			continue
		}
		mounted = append(mounted, c)
	}
	if err := os.WriteFile(filepath.Join(dir, "memory", "memory.use_hierarchy"), []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Debug("memory.use_hierarchy", "err", err)
	}
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755"); err != nil {
		errs = append(errs, fmt.Errorf("remount %s read-only: %w", CgroupRoot, err))
	}
	log.Info("cgroup v1 mounted", "path", CgroupRoot, "controllers", strings.Join(mounted, " "))
	return errors.Join(errs...)
}
