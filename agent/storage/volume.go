package storage

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/errdefs"
)

// Usage is a volume's byte or inode usage (csi.proto VolumeUsage).
type Usage struct {
	Available, Total, Used uint64
}

// VolumeStats returns byte and inode usage of the filesystem at path.
func VolumeStats(path string) (bytes, inodes Usage, err error) {
	if !filepath.IsAbs(path) {
		return Usage{}, Usage{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "volume path %q is not absolute", path)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return Usage{}, Usage{}, errdefs.Errorf(errdefs.ErrNotFound, "volume %s: %v", path, err)
		}
		return Usage{}, Usage{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := uint64(st.Bsize)
	bytes = Usage{Available: st.Bavail * bs, Total: st.Blocks * bs, Used: (st.Blocks - st.Bfree) * bs}
	inodes = Usage{Available: st.Ffree, Total: st.Files, Used: st.Files - st.Ffree}
	return bytes, inodes, nil
}

// ResizeVolume grows the filesystem mounted at path online to size bytes
// (0: to the size of its device), after the host grew the device. ext4
// (resize2fs) and xfs (xfs_growfs) can do this while mounted.
func ResizeVolume(ctx context.Context, path string, size uint64) error {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "volume path %q is not absolute and clean", path)
	}
	mounts, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(path))
	if err != nil {
		return fmt.Errorf("mountinfo: %w", err)
	}
	if len(mounts) == 0 {
		return errdefs.Errorf(errdefs.ErrNotFound, "no filesystem mounted at %s", path)
	}
	mnt := mounts[len(mounts)-1]
	var cmd []string
	switch mnt.FSType {
	case "ext2", "ext3", "ext4":
		if !strings.HasPrefix(mnt.Source, "/dev/") {
			return errdefs.Errorf(errdefs.ErrFailedPrecondition, "%s is not on a block device (%s)", path, mnt.Source)
		}
		cmd = []string{"resize2fs", mnt.Source}
		if size > 0 {
			cmd = append(cmd, strconv.FormatUint(size/1024, 10)+"K")
		}
	case "xfs":
		cmd = []string{"xfs_growfs", path}
		if size > 0 {
			var st unix.Statfs_t
			if err := unix.Statfs(path, &st); err != nil {
				return fmt.Errorf("statfs %s: %w", path, err)
			}
			cmd = append(cmd[:1], "-D", strconv.FormatUint(size/uint64(st.Bsize), 10), path)
		}
	default:
		return errdefs.Errorf(errdefs.ErrUnimplemented, "online resize of %s filesystems is not supported", mnt.FSType)
	}
	bin, err := exec.LookPath(cmd[0])
	if err != nil {
		return errdefs.Errorf(errdefs.ErrFailedPrecondition, "%s is not installed in the guest", cmd[0])
	}
	out, err := exec.CommandContext(ctx, bin, cmd[1:]...).CombinedOutput()
	if err != nil {
		return errdefs.Errorf(errdefs.ErrFailedPrecondition, "%s: %v: %s", strings.Join(cmd, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Swapon enables swap on a device or file already formatted by mkswap.
func Swapon(path string) error {
	if !filepath.IsAbs(path) {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "swap path %q is not absolute", path)
	}
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "swap path: %v", err)
	}
	if _, _, errno := unix.Syscall(unix.SYS_SWAPON, uintptr(unsafe.Pointer(p)), 0, 0); errno != 0 {
		switch errno {
		case unix.ENOENT:
			return errdefs.Errorf(errdefs.ErrNotFound, "swapon %s: %v", path, errno)
		case unix.EINVAL:
			return errdefs.Errorf(errdefs.ErrInvalidArgument, "swapon %s: not a swap area: %v", path, errno)
		case unix.EBUSY:
			return errdefs.Errorf(errdefs.ErrAlreadyExists, "swapon %s: already in use", path)
		}
		return fmt.Errorf("swapon %s: %w", path, errno)
	}
	return nil
}

// UpdateEphemeral remounts ephemeral tmpfs volumes with new options
// (Kubernetes resizing an emptyDir with medium Memory after a memory
// hotplug). Only mount points this manager mounted with the ephemeral
// driver qualify; anything else, /run included, is NotFound or
// InvalidArgument, so the RPC cannot change a filesystem the agent did not
// make for the pod. Every volume is checked before any is remounted.
func (m *Manager) UpdateEphemeral(ctx context.Context, vols []Volume) error {
	type update struct {
		e  *entry
		mo MountOptions
	}
	ups := make([]update, 0, len(vols))
	defer func() {
		for _, u := range ups {
			m.unpin(u.e)
		}
	}()
	for _, v := range vols {
		if v.Driver != DriverEphemeral || (v.FSType != "" && v.FSType != "tmpfs") {
			return errdefs.Errorf(errdefs.ErrInvalidArgument, "%s: only ephemeral tmpfs storages can be updated (driver %q, type %q)", v.MountPoint, v.Driver, v.FSType)
		}
		if !filepath.IsAbs(v.MountPoint) {
			return errdefs.Errorf(errdefs.ErrInvalidArgument, "ephemeral mount point %q is not absolute", v.MountPoint)
		}
		mo, err := updateOptions(v.Options)
		if err != nil {
			return errdefs.Errorf(errdefs.ErrInvalidArgument, "%s: %v", v.MountPoint, err)
		}
		mp := filepath.Clean(v.MountPoint)
		m.mu.Lock()
		e := m.entries[mp]
		if e != nil {
			e.pending++
		}
		m.mu.Unlock()
		if e == nil {
			return errdefs.Errorf(errdefs.ErrNotFound, "no ephemeral storage mounted by the agent at %s", mp)
		}
		ups = append(ups, update{e, mo})
		e.mu.Lock()
		err = checkEphemeral(e)
		e.mu.Unlock()
		if err != nil {
			return err
		}
	}
	for _, u := range ups {
		if err := ctx.Err(); err != nil {
			return err
		}
		u.e.mu.Lock()
		err := checkEphemeral(u.e)
		if err == nil {
			err = m.remountEphemeral(u.e.path, u.mo)
		}
		u.e.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// remountEphemeral remounts the tmpfs at path (resolved below the state
// root without following symlinks) with new options.
func (m *Manager) remountEphemeral(path string, mo MountOptions) error {
	fd, err := openBeneath(m.stateRoot, path, unix.O_PATH)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Mount("", procPath(fd), "tmpfs", mo.Flags|unix.MS_REMOUNT, mo.DataString()); err != nil {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "remount %s with %q: %v", path, mo.DataString(), err)
	}
	return nil
}

// updateOptions parses UpdateEphemeralMounts options. Kata's runtime sends
// "remount" with the new size; the remount is implied here, and fsgid was
// applied when the volume was mounted. Bind and propagation would change
// what is mounted rather than its options.
func updateOptions(opts []string) (MountOptions, error) {
	opts = slices.DeleteFunc(withoutOption(opts, "fsgid"), func(o string) bool { return o == "remount" })
	mo, err := ParseOptions(opts)
	if err != nil {
		return MountOptions{}, err
	}
	if mo.Flags&unix.MS_BIND != 0 || mo.Propagation != 0 {
		return MountOptions{}, errors.New("bind and propagation options cannot be updated")
	}
	return mo, nil
}

// checkEphemeral reports whether e is a live ephemeral tmpfs of the
// manager. Caller holds e.mu.
func checkEphemeral(e *entry) error {
	if e.state == nil {
		return errdefs.Errorf(errdefs.ErrNotFound, "no ephemeral storage mounted by the agent at %s", e.path)
	}
	if e.driver != DriverEphemeral {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "%s is a %s storage, not ephemeral", e.path, e.driver)
	}
	if fstype, ok := mountedFSType(e.path); !ok || fstype != "tmpfs" {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "ephemeral storage at %s is %q, not tmpfs", e.path, fstype)
	}
	return nil
}

// TouchSharedMounts stats every mount below the shared directory, which
// makes virtiofsd drop the inodes and fds it holds for stale entries.
func (m *Manager) TouchSharedMounts(ctx context.Context) error {
	shared := SharedDir(m.stateRoot)
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(shared))
	if err != nil {
		return fmt.Errorf("mountinfo: %w", err)
	}
	for _, mnt := range mounts {
		if err := ctx.Err(); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Stat(mnt.Mountpoint, &st); err != nil {
			m.log.Debug("stat of shared mount failed", "mount_point", mnt.Mountpoint, "err", err)
		}
	}
	return nil
}
