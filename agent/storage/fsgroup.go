package storage

import (
	"fmt"
	"io/fs"
	"log/slog"
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

// applyFSGroup gives a mounted volume to the pod's fsGroup.
func applyFSGroup(log *slog.Logger, root string, g FSGroup, readOnly bool) error {
	if readOnly {
		// Nobody can chown a read-only mount; the kubelet skips them too.
		log.Warn("fs_group ignored on a read-only volume", "mount_point", root)
		return nil
	}
	mask := uint32(fsGroupRW)
	var st unix.Stat_t
	if err := unix.Stat(root, &st); err != nil {
		return fmt.Errorf("stat %s: %w", root, err)
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
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		// Lchown: a symlink in the volume must not hand its target over.
		if err := unix.Lchown(path, -1, int(g.GID)); err != nil {
			return fmt.Errorf("chgrp %s: %w", path, err)
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return fmt.Errorf("stat %s: %w", path, err)
		}
		mode := st.Mode&0o7777 | mask
		if d.IsDir() {
			mode |= fsGroupExec | unix.S_ISGID
		}
		if err := unix.Fchmodat(unix.AT_FDCWD, path, mode, 0); err != nil {
			return fmt.Errorf("chmod %s: %w", path, err)
		}
		return nil
	})
}
