package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/lib/fsremove"
)

// Every path the storage layer mounts on, changes or removes is below the
// state root, and the shared directory there is filled by the host and
// holds the containers' root filesystems: any component of a path may be a
// symlink planted to take a mount, a chmod or a removal elsewhere in the
// guest (/etc), or be swapped for one between a check and its use. So
// paths are resolved beneath the state root with openat2(RESOLVE_BENEATH|
// RESOLVE_NO_SYMLINKS), and used through the descriptor that resolution
// returns (/proc/self/fd/N), never by name again.

const beneathResolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openat2 opens name below dirfd without following any symlink. The
// kernel answers EAGAIN when a rename or mount raced with the resolution;
// the lookup is simply tried again.
func openat2(dirfd int, name string, flags uint64) (int, error) {
	how := unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: beneathResolve}
	for i := 0; ; i++ {
		fd, err := unix.Openat2(dirfd, name, &how)
		if (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)) && i < 64 {
			continue
		}
		return fd, err
	}
}

// procPath names what fd refers to for the calls that take no descriptor
// (mount, chmod): the kernel follows the link to exactly that file.
func procPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// beneathErr maps a failed resolution below the state root: a symlink or a
// non-directory on the way is the request's fault.
func beneathErr(path string, err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOTDIR) {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "%s: a symlink or a non-directory on the way (%v); storage paths are resolved below the state root without following symlinks", path, err)
	}
	return fmt.Errorf("open %s: %w", path, err)
}

// openBeneath opens path, which is root or below it, resolved from root
// without following symlinks. Whatever is mounted on path is what is
// opened.
func openBeneath(root, path string, flags uint64) (int, error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", root, err)
	}
	defer unix.Close(rfd)
	rel := "."
	if path != root {
		var ok bool
		if rel, ok = relBelow(root, path); !ok {
			return -1, errdefs.Errorf(errdefs.ErrInvalidArgument, "%s is not below %s", path, root)
		}
	}
	fd, err := openat2(rfd, rel, flags)
	if err != nil {
		return -1, beneathErr(path, err)
	}
	return fd, nil
}

// relBelow returns path relative to dir when it is strictly below it.
func relBelow(dir, path string) (string, bool) {
	if !within(dir, path) {
		return "", false
	}
	rel, err := filepath.Rel(dir, path)
	return rel, err == nil
}

// mkdirAll creates dir and its missing parents by name: used only for the
// state root, which the agent's own configuration names. It returns what
// it created, outermost first.
func mkdirAll(dir string) ([]string, error) {
	var missing []string
	for p := dir; ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("state root %s: %w", p, err)
		}
		missing = append([]string{p}, missing...)
		if p == "/" || p == "." {
			break
		}
	}
	var created []string
	for _, p := range missing {
		if err := os.Mkdir(p, 0o755); err != nil {
			_ = removeCreated(dir, created)
			return nil, fmt.Errorf("create %s: %w", p, err)
		}
		created = append(created, p)
	}
	return created, nil
}

// makeMountPoint creates path (a directory, or an empty file when file is
// true) and any missing parents below root, one component at a time from
// root without following symlinks, so that nothing is made outside root.
// It returns what it created, outermost first, so a failed request can
// remove exactly that and nothing more.
func makeMountPoint(root, path string, file bool) ([]string, error) {
	created, err := mkdirAll(root)
	if err != nil {
		return nil, err
	}
	fail := func(err error) ([]string, error) {
		_ = removeCreated(root, created)
		return nil, err
	}
	rel, ok := relBelow(root, path)
	if !ok {
		return fail(errdefs.Errorf(errdefs.ErrInvalidArgument, "%s is not below %s", path, root))
	}
	dfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(fmt.Errorf("open %s: %w", root, err))
	}
	defer func() { unix.Close(dfd) }()
	parts := strings.Split(rel, "/")
	cur := root
	for i, part := range parts {
		cur = filepath.Join(cur, part)
		last := i == len(parts)-1
		flags := uint64(unix.O_PATH | unix.O_DIRECTORY)
		if last {
			// Any type may stay as the mount point (a device node for a
			// raw block volume), but not a symlink: RESOLVE_NO_SYMLINKS
			// refuses one as the last component too without O_NOFOLLOW.
			flags = unix.O_PATH
		}
		fd, err := openat2(dfd, part, flags)
		if errors.Is(err, unix.ENOENT) {
			if last && file {
				var f int
				if f, err = unix.Openat(dfd, part, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644); err == nil {
					unix.Close(f)
				}
			} else {
				err = unix.Mkdirat(dfd, part, 0o755)
			}
			switch {
			case err == nil:
				created = append(created, cur)
				fd, err = openat2(dfd, part, flags)
			case errors.Is(err, unix.EEXIST):
				// Made by someone else meanwhile: not ours to remove.
				fd, err = openat2(dfd, part, flags)
			}
		}
		if err != nil {
			return fail(beneathErr(cur, err))
		}
		unix.Close(dfd)
		dfd = fd
	}
	return created, nil
}

// removeCreated removes what makeMountPoint created, innermost first,
// resolving each parent below root again. It removes only empty
// directories and files (never a tree), so a path that still holds data
// (or is still a mount) is left alone rather than emptied.
func removeCreated(root string, created []string) error {
	var errs []error
	for i := len(created) - 1; i >= 0; i-- {
		p := created[i]
		if !within(root, p) {
			// The state root or one of its parents (mkdirAll).
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
			continue
		}
		if err := unlinkBeneath(root, p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// unlinkBeneath removes the empty directory or file at path below root.
func unlinkBeneath(root, path string) error {
	pfd, err := openBeneath(root, filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	defer unix.Close(pfd)
	name := filepath.Base(path)
	err = unix.Unlinkat(pfd, name, unix.AT_REMOVEDIR)
	if errors.Is(err, unix.ENOTDIR) {
		err = unix.Unlinkat(pfd, name, 0)
	}
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// removeTreeBeneath removes the tree at path below root (never crossing a
// mount, see fsremove), its parent resolved below root first.
func removeTreeBeneath(root, path string) error {
	pfd, err := openBeneath(root, filepath.Dir(path), unix.O_PATH|unix.O_DIRECTORY)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	defer unix.Close(pfd)
	if err := fsremove.All(procPath(pfd) + "/" + filepath.Base(path)); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// mountBeneath mounts on target (below root) and applies what mount(2)
// cannot do in one call: the read-only bit of a bind mount and the
// propagation type. On failure nothing stays mounted.
func mountBeneath(root, target, source, fstype string, mo MountOptions) error {
	fd, err := openBeneath(root, target, unix.O_PATH)
	if err != nil {
		return err
	}
	data := mo.DataString()
	err = unix.Mount(source, procPath(fd), fstype, mo.Flags, data)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("mount %s on %s (type %q, data %q): %w", source, target, fstype, data, err)
	}
	// The second calls act on the new mount: resolving target again
	// lands on its root.
	again := func(flags uintptr, what string) error {
		top, err := openBeneath(root, target, unix.O_PATH)
		if err == nil {
			err = unix.Mount("", procPath(top), "", flags, "")
			unix.Close(top)
		}
		if err != nil {
			_ = unmountBeneath(root, target)
			return fmt.Errorf("%s %s: %w", what, target, err)
		}
		return nil
	}
	if mo.Flags&unix.MS_BIND != 0 && mo.Flags&unix.MS_RDONLY != 0 && mo.Flags&unix.MS_REMOUNT == 0 {
		if err := again(mo.Flags|unix.MS_REMOUNT, "remount read-only"); err != nil {
			return err
		}
	}
	if mo.Propagation != 0 {
		if err := again(mo.Propagation, "set propagation of"); err != nil {
			return err
		}
	}
	return nil
}

// unmountBeneath unmounts target (below root), its parent resolved below
// root and the last component not followed, so that a symlink swapped in
// cannot turn the unmount onto another of the guest's mounts. A busy
// mount is detached instead, so a process still holding a file open there
// cannot pin the sandbox's teardown.
func unmountBeneath(root, target string) error {
	pfd, err := openBeneath(root, filepath.Dir(target), unix.O_PATH|unix.O_DIRECTORY)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	defer unix.Close(pfd)
	p := procPath(pfd) + "/" + filepath.Base(target)
	err = unix.Unmount(p, unix.UMOUNT_NOFOLLOW)
	if errors.Is(err, unix.EBUSY) {
		err = unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
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
