package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Group permission bits Kubernetes' fsGroup grants, as in the kubelet and
// Kata's agent: group read(-write), group/owner exec on directories, and
// setgid on directories so new files inherit the group.
const (
	fsGroupRW   = 0o660
	fsGroupRO   = 0o440
	fsGroupExec = 0o110
)

// savedAttr is the owner and mode an entry of a volume had before the
// request changed them, for teardown to give back. rel is relative to the
// mount point ("" for the mount point itself).
type savedAttr struct {
	rel      string
	uid, gid uint32
	mode     uint32
	link     bool // a symlink: its mode is not ours to set
}

func saved(rel string, st *unix.Stat_t) savedAttr {
	return savedAttr{rel: rel, uid: st.Uid, gid: st.Gid, mode: st.Mode & 0o7777, link: st.Mode&unix.S_IFMT == unix.S_IFLNK}
}

// chownFd changes the group of the entry fd (O_PATH) refers to, without
// following it if it is a symlink.
func chownFd(fd, uid, gid int) error {
	return unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
}

// setFSGid gives a volume root (fd, O_PATH) to a group, setgid and group
// read-write, so files created there by the pod's supplementary group stay
// shared.
func setFSGid(fd int, path string, gid int) error {
	if err := chownFd(fd, -1, gid); err != nil {
		return fmt.Errorf("chown %s to gid %d: %w", path, gid, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if err := unix.Chmod(procPath(fd), (st.Mode&0o7777)|unix.S_ISGID|0o060); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	return nil
}

// applyFSGroup gives the volume mounted at path (below root) to the pod's
// fsGroup. The walk goes from descriptor to descriptor without following
// symlinks, so an entry swapped for a symlink while it runs cannot hand
// anything outside the volume over. record, when set, is called with each
// entry's owner and mode before they change.
func applyFSGroup(log *slog.Logger, root, path string, g FSGroup, readOnly bool, record func(savedAttr)) error {
	if readOnly {
		// Nobody can chown a read-only mount; the kubelet skips them too.
		log.Warn("fs_group ignored on a read-only volume", "mount_point", path)
		return nil
	}
	fd, err := openBeneath(root, path, unix.O_PATH)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	mask := uint32(fsGroupRW)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if g.OnRootMismatch && st.Gid == g.GID {
		want := mask | fsGroupExec | unix.S_ISGID
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			want = mask
		}
		if st.Mode&want == want {
			return nil
		}
	}
	return fsGroupWalk(fd, path, "", int(g.GID), mask, record)
}

// fsGroupWalk applies the group to the entry fd (O_PATH, not followed)
// and, for a directory, to everything below it.
func fsGroupWalk(fd int, path, rel string, gid int, mask uint32, record func(savedAttr)) error {
	shown := filepath.Join(path, rel)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", shown, err)
	}
	if record != nil {
		record(saved(rel, &st))
	}
	if err := chownFd(fd, -1, gid); err != nil {
		return fmt.Errorf("chgrp %s: %w", shown, err)
	}
	typ := st.Mode & unix.S_IFMT
	if typ == unix.S_IFLNK {
		// A symlink in the volume must not hand its target over.
		return nil
	}
	// chown may have cleared setuid/setgid: build on what is there now.
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", shown, err)
	}
	mode := st.Mode&0o7777 | mask
	if typ == unix.S_IFDIR {
		mode |= fsGroupExec | unix.S_ISGID
	}
	if err := unix.Chmod(procPath(fd), mode); err != nil {
		return fmt.Errorf("chmod %s: %w", shown, err)
	}
	if typ != unix.S_IFDIR {
		return nil
	}
	dfd, err := openat2(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("open %s: %w", shown, err)
	}
	dir := os.NewFile(uintptr(dfd), shown)
	names, err := dir.Readdirnames(-1)
	dir.Close()
	if err != nil {
		return fmt.Errorf("read %s: %w", shown, err)
	}
	for _, name := range names {
		// O_PATH|O_NOFOLLOW: a symlink is opened as itself.
		cfd, err := openat2(fd, name, unix.O_PATH|unix.O_NOFOLLOW)
		if err != nil {
			return fmt.Errorf("open %s: %w", filepath.Join(shown, name), err)
		}
		err = fsGroupWalk(cfd, path, filepath.Join(rel, name), gid, mask, record)
		unix.Close(cfd)
		if err != nil {
			return err
		}
	}
	return nil
}

// restoreAttrs gives the entries of the volume at path (below root) back
// the owners and modes saved before the request changed them, the last
// change undone first. Entries gone meanwhile are skipped.
func restoreAttrs(root, path string, attrs []savedAttr) error {
	if len(attrs) == 0 {
		return nil
	}
	fd, err := openBeneath(root, path, unix.O_PATH)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore %s: %w", path, err)
	}
	defer unix.Close(fd)
	var errs []error
	for i := len(attrs) - 1; i >= 0; i-- {
		a := attrs[i]
		efd := fd
		if a.rel != "" {
			efd, err = openat2(fd, a.rel, unix.O_PATH|unix.O_NOFOLLOW)
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("restore %s: %w", filepath.Join(path, a.rel), err))
				continue
			}
		}
		// Owner first: chown clears setuid and setgid, which the mode
		// then puts back.
		if err := chownFd(efd, int(a.uid), int(a.gid)); err != nil {
			errs = append(errs, fmt.Errorf("restore owner of %s: %w", filepath.Join(path, a.rel), err))
		} else if !a.link {
			if err := unix.Chmod(procPath(efd), a.mode); err != nil {
				errs = append(errs, fmt.Errorf("restore mode of %s: %w", filepath.Join(path, a.rel), err))
			}
		}
		if efd != fd {
			unix.Close(efd)
		}
	}
	return errors.Join(errs...)
}
