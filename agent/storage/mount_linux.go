package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// makeMountPoint creates path (a directory, or an empty file when file is
// true) and any missing parents. It returns what it created, outermost
// first, so a failed request can remove exactly that and nothing more.
func makeMountPoint(path string, file bool) ([]string, error) {
	if _, err := os.Lstat(path); err == nil {
		return nil, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("mount point %s: %w", path, err)
	}
	var missing []string
	for p := path; ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("mount point %s: %w", p, err)
		}
		missing = append([]string{p}, missing...)
		if p == "/" || p == "." {
			break
		}
	}
	var created []string
	for i, p := range missing {
		var err error
		if file && i == len(missing)-1 {
			var f *os.File
			f, err = os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o644)
			if err == nil {
				err = f.Close()
			}
		} else {
			err = os.Mkdir(p, 0o755)
		}
		if err != nil {
			removeCreated(created)
			return nil, fmt.Errorf("create mount point %s: %w", p, err)
		}
		created = append(created, p)
	}
	return created, nil
}

// removeCreated removes what makeMountPoint created, innermost first. It
// uses Remove, never RemoveAll, so a path that still holds data (or is
// still a mount) is left alone rather than emptied.
func removeCreated(created []string) error {
	var errs []error
	for i := len(created) - 1; i >= 0; i-- {
		if err := os.Remove(created[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// mountFS mounts and applies what mount(2) cannot do in one call: the
// read-only bit of a bind mount and the propagation type. On failure
// nothing stays mounted.
func mountFS(source, target, fstype string, mo MountOptions) error {
	data := mo.DataString()
	if err := unix.Mount(source, target, fstype, mo.Flags, data); err != nil {
		return fmt.Errorf("mount %s on %s (type %q, data %q): %w", source, target, fstype, data, err)
	}
	if mo.Flags&unix.MS_BIND != 0 && mo.Flags&unix.MS_RDONLY != 0 && mo.Flags&unix.MS_REMOUNT == 0 {
		if err := unix.Mount("", target, "", mo.Flags|unix.MS_REMOUNT, ""); err != nil {
			_ = unmount(target)
			return fmt.Errorf("remount %s read-only: %w", target, err)
		}
	}
	if mo.Propagation != 0 {
		if err := unix.Mount("", target, "", mo.Propagation, ""); err != nil {
			_ = unmount(target)
			return fmt.Errorf("set propagation of %s: %w", target, err)
		}
	}
	return nil
}

// unmount unmounts target; a busy mount is detached instead, so a process
// still holding a file open there cannot pin the sandbox's teardown.
func unmount(target string) error {
	err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
	}
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

// mountedFSType reports the filesystem type mounted exactly at path.
func mountedFSType(path string) (string, bool) {
	mounts, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(path))
	if err != nil || len(mounts) == 0 {
		return "", false
	}
	return mounts[len(mounts)-1].FSType, true
}

// isDirSource reports whether a bind source is a directory; sources that
// are not paths (tags, "tmpfs") count as directories.
func isDirSource(source string) bool {
	st, err := os.Stat(source)
	return err != nil || st.IsDir()
}
