// Package copyfile implements CopyFile: the host writes files, directories
// and symlinks into the sandbox's shared directory when there is no shared
// filesystem. Every path is resolved below that directory without
// following symlinks, because containers can plant symlinks there (their
// rootfs lives below it).
package copyfile

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/errdefs"
)

// Request is one CopyFile call; a file arrives in chunks at increasing
// offsets and appears under its name once FileSize bytes are written.
type Request struct {
	Path     string
	FileSize int64
	FileMode uint32 // S_IFMT type bits plus permissions
	DirMode  uint32 // for parent directories created on the way
	UID, GID int32  // -1 leaves the owner unchanged
	Offset   int64
	Data     []byte
}

// Writer writes below Base.
type Writer struct{ base string }

// New returns a Writer confined to base, normally
// /run/kata-containers/shared/containers.
func New(base string) *Writer { return &Writer{base: filepath.Clean(base)} }

// Base is the directory everything is written below.
func (w *Writer) Base() string { return w.base }

// tmpSuffix names the file a copy is assembled in before it is renamed.
const tmpSuffix = ".wren-copy"

// RelPath checks that p is a canonical absolute path strictly below base
// and returns it relative to base.
func RelPath(base, p string) (string, error) {
	if strings.IndexByte(p, 0) >= 0 {
		return "", errdefs.New(errdefs.ErrInvalidArgument, "path contains a NUL byte")
	}
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return "", errdefs.Errorf(errdefs.ErrInvalidArgument, "path %q is not absolute and canonical", p)
	}
	rel, ok := strings.CutPrefix(p, base+"/")
	if !ok || rel == "" || !filepath.IsLocal(rel) {
		return "", errdefs.Errorf(errdefs.ErrInvalidArgument, "path %q is not below %s", p, base)
	}
	return rel, nil
}

func denied(p string, err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOTDIR) {
		return errdefs.Errorf(errdefs.ErrPermissionDenied, "%s: symlink or non-directory on the way: %v", p, err)
	}
	return fmt.Errorf("%s: %w", p, err)
}

var beneath = unix.OpenHow{
	Flags:   unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_RDONLY,
	Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
}

// openParent opens (creating as needed) the directory that will hold the
// last element of rel, refusing any symlink on the way.
func (w *Writer) openParent(rel string, dirMode uint32, uid, gid int) (int, string, error) {
	if err := mkdirAllBase(w.base); err != nil {
		return -1, "", err
	}
	dfd, err := unix.Open(w.base, unix.O_DIRECTORY|unix.O_CLOEXEC|unix.O_RDONLY, 0)
	if err != nil {
		return -1, "", fmt.Errorf("open %s: %w", w.base, err)
	}
	parts := strings.Split(rel, "/")
	for i, part := range parts[:len(parts)-1] {
		how := beneath
		fd, err := unix.Openat2(dfd, part, &how)
		if errors.Is(err, unix.ENOENT) {
			err = unix.Mkdirat(dfd, part, dirMode&0o7777)
			if err == nil || errors.Is(err, unix.EEXIST) {
				if err == nil {
					// mkdir applies the umask; the host's dir_mode is exact.
					_ = unix.Fchmodat(dfd, part, dirMode&0o7777, 0)
					_ = unix.Fchownat(dfd, part, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
				}
				how = beneath
				fd, err = unix.Openat2(dfd, part, &how)
			}
		}
		unix.Close(dfd)
		if err != nil {
			return -1, "", denied(filepath.Join(w.base, filepath.Join(parts[:i+1]...)), err)
		}
		dfd = fd
	}
	return dfd, parts[len(parts)-1], nil
}

func mkdirAllBase(base string) error {
	var st unix.Stat_t
	if err := unix.Stat(base, &st); err == nil {
		return nil
	}
	// Without a shared filesystem nothing has made the directory yet.
	parent := filepath.Dir(base)
	if parent != base {
		if err := mkdirAllBase(parent); err != nil {
			return err
		}
	}
	if err := unix.Mkdir(base, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("create %s: %w", base, err)
	}
	return nil
}

// CheckSymlinkTarget refuses a symlink (at rel below base) whose target
// points outside base.
func CheckSymlinkTarget(base, rel, target string) error {
	if target == "" || strings.IndexByte(target, 0) >= 0 {
		return errdefs.New(errdefs.ErrInvalidArgument, "empty symlink target or NUL byte in it")
	}
	resolved := target
	if !filepath.IsAbs(target) {
		resolved = filepath.Join(base, filepath.Dir(rel), target)
	}
	resolved = filepath.Clean(resolved)
	if resolved != base && !strings.HasPrefix(resolved, base+"/") {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "symlink target %q leaves %s", target, base)
	}
	return nil
}

// Copy performs one CopyFile request.
func (w *Writer) Copy(req Request) error {
	rel, err := RelPath(w.base, req.Path)
	if err != nil {
		return err
	}
	uid, gid := int(req.UID), int(req.GID)
	typ := req.FileMode & unix.S_IFMT
	switch typ {
	case unix.S_IFDIR, unix.S_IFLNK, unix.S_IFREG, 0:
	default:
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "file mode %#o is not a file, directory or symlink", req.FileMode)
	}
	if typ == unix.S_IFLNK {
		if err := CheckSymlinkTarget(w.base, rel, string(req.Data)); err != nil {
			return err
		}
	}
	if typ == unix.S_IFREG || typ == 0 {
		if req.Offset < 0 || req.FileSize < 0 || req.Offset > req.FileSize || int64(len(req.Data)) > req.FileSize-req.Offset {
			return errdefs.Errorf(errdefs.ErrInvalidArgument, "chunk of %d bytes at offset %d does not fit a file of %d bytes", len(req.Data), req.Offset, req.FileSize)
		}
		if len("."+filepath.Base(rel)+tmpSuffix) > unix.NAME_MAX {
			return errdefs.Errorf(errdefs.ErrInvalidArgument, "file name in %q too long", req.Path)
		}
	}

	dfd, name, err := w.openParent(rel, req.DirMode, uid, gid)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)

	switch typ {
	case unix.S_IFDIR:
		return writeDir(dfd, name, req)
	case unix.S_IFLNK:
		return writeSymlink(dfd, name, req)
	}
	return writeChunk(dfd, name, req)
}

func writeDir(dfd int, name string, req Request) error {
	if err := unix.Mkdirat(dfd, name, req.FileMode&0o7777); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("mkdir %s: %w", req.Path, err)
	}
	how := beneath
	fd, err := unix.Openat2(dfd, name, &how)
	if err != nil {
		return denied(req.Path, err)
	}
	defer unix.Close(fd)
	if err := unix.Fchmod(fd, req.FileMode&0o7777); err != nil {
		return fmt.Errorf("chmod %s: %w", req.Path, err)
	}
	if err := unix.Fchown(fd, int(req.UID), int(req.GID)); err != nil {
		return fmt.Errorf("chown %s: %w", req.Path, err)
	}
	return nil
}

func writeSymlink(dfd int, name string, req Request) error {
	target := string(req.Data)
	err := unix.Symlinkat(target, dfd, name)
	if errors.Is(err, unix.EEXIST) {
		// Replace a file or symlink, never a directory.
		if err = unix.Unlinkat(dfd, name, 0); err == nil {
			err = unix.Symlinkat(target, dfd, name)
		}
	}
	if err != nil {
		return fmt.Errorf("symlink %s: %w", req.Path, err)
	}
	if err := unix.Fchownat(dfd, name, int(req.UID), int(req.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown %s: %w", req.Path, err)
	}
	return nil
}

func writeChunk(dfd int, name string, req Request) error {
	tmp := "." + name + tmpSuffix
	flags := unix.O_WRONLY | unix.O_CREAT | unix.O_NOFOLLOW | unix.O_CLOEXEC
	if req.Offset == 0 {
		flags |= unix.O_TRUNC
	}
	fd, err := unix.Openat(dfd, tmp, flags, 0o600)
	if err != nil {
		return denied(req.Path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", tmp, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return errdefs.Errorf(errdefs.ErrPermissionDenied, "%s: temporary file is not a regular file", req.Path)
	}
	for off, data := req.Offset, req.Data; len(data) > 0; {
		n, err := unix.Pwrite(fd, data, off)
		if err != nil {
			return fmt.Errorf("write %s: %w", req.Path, err)
		}
		data, off = data[n:], off+int64(n)
	}
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", tmp, err)
	}
	if st.Size < req.FileSize {
		return nil // more chunks to come
	}
	if st.Size > req.FileSize {
		if err := unix.Ftruncate(fd, req.FileSize); err != nil {
			return fmt.Errorf("truncate %s: %w", req.Path, err)
		}
	}
	if err := unix.Fchmod(fd, req.FileMode&0o7777); err != nil {
		return fmt.Errorf("chmod %s: %w", req.Path, err)
	}
	if err := unix.Fchown(fd, int(req.UID), int(req.GID)); err != nil {
		return fmt.Errorf("chown %s: %w", req.Path, err)
	}
	if err := unix.Renameat(dfd, tmp, dfd, name); err != nil {
		return fmt.Errorf("rename into %s: %w", req.Path, err)
	}
	return nil
}
