// Package fsremove removes directory trees without ever crossing a mount
// point. os.RemoveAll descends into whatever is mounted below the path it
// is given: a bundle whose rootfs still has a /dev bind (or a devtmpfs,
// which is one instance shared with the host's /dev) would have the
// kernel's device nodes deleted. All refuses instead, and removes nothing,
// when the tree holds a mount.
package fsremove

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrMounted is returned (wrapped) when the path or something below it is
// a mount point.
var ErrMounted = errors.New("tree holds a mount point")

// All removes path and everything below it, like os.RemoveAll, but first
// refuses with ErrMounted if path or anything below it is a mount point in
// the caller's mount namespace; nothing is removed then. While removing it
// also checks every entry's mount id (statx STATX_MNT_ID, or the device
// number on kernels without it) against the top directory's and never
// descends into or unlinks an entry on another mount, so a mount that
// appears during the walk is not emptied either. A missing path is not an
// error.
func All(path string) error {
	if path == "" {
		return nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	fi, err := os.Lstat(abs)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	// Mount points are recorded under resolved paths.
	real := abs
	if dir, err := filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
		real = filepath.Join(dir, filepath.Base(abs))
	}
	mounted, err := MountsUnder(real)
	if err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	if len(mounted) > 0 {
		return fmt.Errorf("remove %s: %w: %s", path, ErrMounted, strings.Join(mounted, ", "))
	}
	if !fi.IsDir() {
		if err := os.Remove(abs); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", path, err)
		}
		return nil
	}
	parent, err := unix.Open(filepath.Dir(abs), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("remove %s: open parent: %w", path, err)
	}
	defer unix.Close(parent)
	name := filepath.Base(abs)
	top, err := identify(parent, name)
	if err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	if err := removeDir(parent, name, top, abs); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// MountsUnder lists the mount points (from /proc/self/mountinfo) that are
// dir or lie below it.
func MountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return mountsUnder(f, filepath.Clean(dir))
}

func mountsUnder(r io.Reader, dir string) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		mp := unescape(f[4])
		if mp == dir || dir == "/" || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return out, nil
}

// unescape decodes mountinfo's octal escapes (\040 for space, ...).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1:i+4]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if s[i] < '0' || s[i] > '7' {
			return false
		}
	}
	return true
}

// fsID is what tells two mounts apart.
type fsID struct {
	mnt    uint64 // statx mount id; 0 when the kernel has none
	dev    uint64
	isDir  bool
	hasMnt bool
}

func (a fsID) sameMount(b fsID) bool {
	if a.hasMnt && b.hasMnt {
		return a.mnt == b.mnt
	}
	return a.dev == b.dev
}

// identify stats name in dirfd without following a symlink; an empty name
// stats dirfd itself.
func identify(dirfd int, name string) (fsID, error) {
	flags := unix.AT_SYMLINK_NOFOLLOW | unix.AT_NO_AUTOMOUNT
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	var stx unix.Statx_t
	if err := unix.Statx(dirfd, name, flags, unix.STATX_TYPE|unix.STATX_MNT_ID, &stx); err != nil {
		if !errors.Is(err, unix.ENOSYS) {
			return fsID{}, err
		}
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, name, &st, flags&^unix.AT_NO_AUTOMOUNT); err != nil {
			return fsID{}, err
		}
		return fsID{dev: st.Dev, isDir: st.Mode&unix.S_IFMT == unix.S_IFDIR}, nil
	}
	return fsID{
		mnt:    stx.Mnt_id,
		hasMnt: stx.Mask&unix.STATX_MNT_ID != 0,
		dev:    unix.Mkdev(stx.Dev_major, stx.Dev_minor),
		isDir:  stx.Mode&unix.S_IFMT == unix.S_IFDIR,
	}, nil
}

// removeDir empties and removes the directory name in parent, which must
// be on the mount top describes. path is for error messages.
func removeDir(parent int, name string, top fsID, path string) error {
	fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	// Checked on the opened directory, so a mount placed on name after
	// the parent's listing is still seen.
	here, err := identify(fd, "")
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if !here.sameMount(top) {
		unix.Close(fd)
		return fmt.Errorf("%w: %s", ErrMounted, path)
	}
	dir := os.NewFile(uintptr(fd), path)
	var errs []error
	for {
		names, err := dir.Readdirnames(512)
		for _, n := range names {
			if err := removeEntry(fd, n, top, filepath.Join(path, n)); err != nil {
				errs = append(errs, err)
			}
		}
		if errors.Is(err, io.EOF) || len(names) == 0 {
			break
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", path, err))
			break
		}
	}
	dir.Close()
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := unix.Unlinkat(parent, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("rmdir %s: %w", path, err)
	}
	return nil
}

func removeEntry(dirfd int, name string, top fsID, path string) error {
	id, err := identify(dirfd, name)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if !id.sameMount(top) {
		return fmt.Errorf("%w: %s", ErrMounted, path)
	}
	if id.isDir {
		return removeDir(dirfd, name, top, path)
	}
	if err := unix.Unlinkat(dirfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unlink %s: %w", path, err)
	}
	return nil
}
