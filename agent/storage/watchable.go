package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/errdefs"
)

// Kata's limits for a watchable-bind volume (ConfigMaps, Secrets): beyond
// them the copy stops and the source is bind-mounted instead.
const (
	watchMaxEntries = 16
	watchMaxBytes   = 1 << 20
)

// bindWatcher keeps tmpfs copies of shared-fs sources up to date, because
// inotify does not see changes the host makes through virtio-fs.
type bindWatcher struct {
	log      *slog.Logger
	root     string // the state root, which dir is below
	dir      string // the tmpfs holding every copy
	interval time.Duration

	mu           sync.Mutex
	items        map[string]*watchedItem // by target
	tmpfsCreated []string
	tmpfsMounted bool
	stop         chan struct{}
	stopped      chan struct{}
}

type watchedItem struct {
	mu      sync.Mutex
	root    string // the state root
	source  string
	target  string
	shared  string // the source must stay below it
	copies  string // ... and outside the watcher's tmpfs
	last    map[string]fileSig
	bound   bool     // over the limits: source is bind-mounted at target
	created []string // target parents created in the tmpfs
}

type fileSig struct {
	mode  fs.FileMode
	size  int64
	mtime time.Time
	link  string
}

// testHookAfterScan, when a test sets it, runs in refresh between the
// check of the source and the copy: where the host could swap a path
// component for a symlink.
var testHookAfterScan func()

func newBindWatcher(log *slog.Logger, root, dir string, interval time.Duration) *bindWatcher {
	return &bindWatcher{log: log, root: root, dir: dir, interval: interval, items: map[string]*watchedItem{}}
}

func (m *Manager) mountWatchable(ctx context.Context, owner string, v *Volume) (*mountState, error) {
	if v.Source == "" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "watchable-bind storage without a source")
	}
	if err := m.watch.add(SharedDir(m.stateRoot), v.Source, v.MountPoint); err != nil {
		return nil, err
	}
	return &mountState{watched: true}, nil
}

// openSource opens source below the shared directory the host fills,
// outside the tmpfs of copies, without following any symlink on the way or
// at its end, and returns an O_PATH descriptor of it. The host names the
// source; without this a request could have any guest file (the agent's
// own state, /etc) copied into a container's view. Everything the refresh
// then reads, copies or binds is reached from that descriptor, never by
// name again, so a component swapped for a symlink after this check
// cannot take the copy elsewhere.
func openSource(shared, copies, source string) (int, error) {
	if !filepath.IsAbs(source) {
		return -1, errdefs.Errorf(errdefs.ErrInvalidArgument, "watchable-bind source %q is not an absolute path", source)
	}
	source = filepath.Clean(source)
	rel, ok := relBelow(shared, source)
	if !ok {
		return -1, errdefs.Errorf(errdefs.ErrInvalidArgument, "watchable-bind source %s is not below the shared directory %s", source, shared)
	}
	if source == copies || within(copies, source) {
		return -1, errdefs.Errorf(errdefs.ErrInvalidArgument, "watchable-bind source %s is inside the watcher's own copies", source)
	}
	sfd, err := unix.Open(shared, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return -1, errdefs.Errorf(errdefs.ErrNotFound, "watchable-bind source %s does not exist", source)
	}
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", shared, err)
	}
	defer unix.Close(sfd)
	fd, err := openat2(sfd, rel, unix.O_PATH)
	switch {
	case errors.Is(err, unix.ENOENT):
		return -1, errdefs.Errorf(errdefs.ErrNotFound, "watchable-bind source %s does not exist", source)
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV), errors.Is(err, unix.ENOTDIR):
		return -1, errdefs.Errorf(errdefs.ErrInvalidArgument, "watchable-bind source %s: a symlink or a non-directory on the way (%v); sources are resolved below the shared directory without following symlinks", source, err)
	case err != nil:
		return -1, fmt.Errorf("open %s: %w", source, err)
	}
	return fd, nil
}

func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../")
}

func (w *bindWatcher) add(shared, source, target string) error {
	if !within(w.dir, target) {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "watchable-bind mount point %s is not below %s", target, w.dir)
	}
	fd, err := openSource(shared, w.dir, source)
	if err != nil {
		return err
	}
	unix.Close(fd)
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.items[target]; ok {
		return errdefs.Errorf(errdefs.ErrAlreadyExists, "watchable-bind %s already watched", target)
	}
	if err := w.ensureTmpfs(); err != nil {
		return err
	}
	it := &watchedItem{root: w.root, source: source, target: target, shared: shared, copies: w.dir}
	if err := it.refresh(); err != nil {
		_ = it.undo()
		_ = w.dropTmpfsIfIdle() // best effort: the refresh's error is the one to report
		return err
	}
	w.items[target] = it
	if w.stop == nil {
		w.stop, w.stopped = make(chan struct{}), make(chan struct{})
		go w.loop(w.stop, w.stopped)
	}
	return nil
}

// ensureTmpfs mounts the tmpfs the copies live in. Caller holds w.mu.
func (w *bindWatcher) ensureTmpfs() error {
	if w.tmpfsMounted {
		return nil
	}
	created, err := makeMountPoint(w.root, w.dir, false)
	if err != nil {
		return err
	}
	if err := mountBeneath(w.root, w.dir, "tmpfs", "tmpfs", MountOptions{Flags: unix.MS_NODEV | unix.MS_NOSUID, Data: []string{"mode=755"}}); err != nil {
		_ = removeCreated(w.root, created)
		return err
	}
	w.tmpfsCreated, w.tmpfsMounted = created, true
	return nil
}

// dropTmpfsIfIdle unmounts the tmpfs when nothing is watched. Caller holds
// w.mu.
func (w *bindWatcher) dropTmpfsIfIdle() error {
	if len(w.items) > 0 || !w.tmpfsMounted {
		return nil
	}
	if w.stop != nil {
		close(w.stop)
		<-w.stopped
		w.stop, w.stopped = nil, nil
	}
	if err := unmountBeneath(w.root, w.dir); err != nil {
		return err
	}
	w.tmpfsMounted = false
	err := removeCreated(w.root, w.tmpfsCreated)
	w.tmpfsCreated = nil
	return err
}

func (w *bindWatcher) remove(target string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	it := w.items[target]
	if it == nil {
		return nil
	}
	it.mu.Lock()
	err := it.undo()
	it.mu.Unlock()
	if err != nil {
		return err
	}
	delete(w.items, target)
	return w.dropTmpfsIfIdle()
}

func (w *bindWatcher) stopAll() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	var errs []error
	for t, it := range w.items {
		it.mu.Lock()
		if err := it.undo(); err != nil {
			errs = append(errs, err)
		}
		it.mu.Unlock()
		delete(w.items, t)
	}
	if err := w.dropTmpfsIfIdle(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (w *bindWatcher) loop(stop, stopped chan struct{}) {
	defer close(stopped)
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			w.refreshAll()
		}
	}
}

// refreshAll copies changed sources; the watcher lock is held only to list
// the items.
func (w *bindWatcher) refreshAll() {
	w.mu.Lock()
	items := make([]*watchedItem, 0, len(w.items))
	for _, it := range w.items {
		items = append(items, it)
	}
	w.mu.Unlock()
	for _, it := range items {
		it.mu.Lock()
		if err := it.refresh(); err != nil {
			w.log.Warn("watchable-bind refresh failed", "source", it.source, "target", it.target, "err", err)
		}
		it.mu.Unlock()
	}
}

// undo removes the copy (or the fallback bind mount) and what was created
// for it. Caller holds it.mu.
func (it *watchedItem) undo() error {
	if it.bound {
		if err := unmountBeneath(it.root, it.target); err != nil {
			return err
		}
		it.bound = false
	}
	if err := removeTreeBeneath(it.root, it.target); err != nil {
		return err
	}
	return removeCreated(it.root, it.created)
}

// refresh brings target up to date with source, or falls back to a bind
// mount once the source outgrows the limits. Caller holds it.mu.
func (it *watchedItem) refresh() error {
	if it.bound {
		return nil
	}
	// Again on every refresh: the host can swap the source for a symlink
	// after the mount was accepted. The last good copy stays.
	src, err := openSource(it.shared, it.copies, it.source)
	if err != nil {
		return err
	}
	defer unix.Close(src)
	cur, err := scanSource(src, it.source)
	if err != nil {
		return err
	}
	if testHookAfterScan != nil {
		testHookAfterScan()
	}
	if it.created == nil && it.last == nil {
		parent := filepath.Dir(it.target)
		if it.created, err = makeMountPoint(it.root, parent, false); err != nil {
			return err
		}
	}
	if overLimits(cur) {
		return it.bindFallback(src, cur[""].mode.IsDir())
	}
	if sameSigs(cur, it.last) {
		return nil
	}
	if err := syncCopy(it.root, src, it.target, cur, it.last); err != nil {
		return err
	}
	it.last = cur
	return nil
}

// bindFallback bind-mounts the source the refresh checked (src, its
// descriptor) at the target.
func (it *watchedItem) bindFallback(src int, dir bool) error {
	if _, err := os.Lstat(it.target); errors.Is(err, fs.ErrNotExist) {
		if _, err := makeMountPoint(it.root, it.target, !dir); err != nil {
			return err
		}
	}
	if err := mountBeneath(it.root, it.target, procPath(src), "", MountOptions{Flags: unix.MS_BIND | unix.MS_REC}); err != nil {
		return err
	}
	it.bound = true
	return nil
}

func overLimits(sigs map[string]fileSig) bool {
	var n int
	var size int64
	for _, s := range sigs {
		if s.mode.IsDir() {
			continue
		}
		n++
		size += s.size
	}
	return n > watchMaxEntries || size > watchMaxBytes
}

func sameSigs(a, b map[string]fileSig) bool {
	if len(a) != len(b) || b == nil {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// scanSource lists the source src (an O_PATH descriptor; rel "" is the
// source itself) from descriptor to descriptor, without following symlinks
// below it; it stops early once past the limits. source names it in
// errors.
func scanSource(src int, source string) (map[string]fileSig, error) {
	sigs := map[string]fileSig{}
	files := 0
	var st unix.Stat_t
	if err := unix.Fstat(src, &st); err != nil {
		return nil, fmt.Errorf("scan %s: %w", source, err)
	}
	sigs[""] = sigOf(&st, "")
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return sigs, nil
	}
	var walk func(fd int, rel string) error
	walk = func(fd int, rel string) error {
		dfd, err := openat2(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		dir := os.NewFile(uintptr(dfd), filepath.Join(source, rel))
		names, err := dir.Readdirnames(-1)
		dir.Close()
		if err != nil {
			return err
		}
		// Sorted, so that the limits cut the same entries every time.
		slices.Sort(names)
		for _, name := range names {
			var st unix.Stat_t
			if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return err
			}
			link := ""
			if st.Mode&unix.S_IFMT == unix.S_IFLNK {
				if link, err = readlinkat(fd, name); err != nil {
					return err
				}
			}
			p := filepath.Join(rel, name)
			sigs[p] = sigOf(&st, link)
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				if files++; files > watchMaxEntries {
					return filepath.SkipAll
				}
				continue
			}
			cfd, err := openat2(fd, name, unix.O_PATH|unix.O_DIRECTORY)
			if err != nil {
				return err
			}
			err = walk(cfd, p)
			unix.Close(cfd)
			if err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(src, ""); err != nil && !errors.Is(err, filepath.SkipAll) {
		return nil, fmt.Errorf("scan %s: %w", source, err)
	}
	return sigs, nil
}

func sigOf(st *unix.Stat_t, link string) fileSig {
	s := fileSig{mode: fileMode(st.Mode), size: st.Size, mtime: time.Unix(st.Mtim.Unix()), link: link}
	if link != "" {
		s.size = 0
	}
	return s
}

// fileMode converts st_mode to what os.FileInfo.Mode would say.
func fileMode(m uint32) fs.FileMode {
	mode := fs.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		mode |= fs.ModeDir
	case unix.S_IFLNK:
		mode |= fs.ModeSymlink
	case unix.S_IFIFO:
		mode |= fs.ModeNamedPipe
	case unix.S_IFSOCK:
		mode |= fs.ModeSocket
	case unix.S_IFCHR:
		mode |= fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		mode |= fs.ModeDevice
	}
	if m&unix.S_ISUID != 0 {
		mode |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		mode |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// syncCopy makes target (below root) a copy of the source src (its
// descriptor): new and changed entries are written (files through a
// rename, so readers never see half a file), vanished ones removed. The
// copies are in a tmpfs containers see, so each entry's directory is
// resolved below root without following symlinks and written through its
// descriptor: a symlink a container put in its copy is not written
// through.
func syncCopy(root string, src int, target string, cur, last map[string]fileSig) error {
	for _, rel := range sortedKeys(cur) {
		s := cur[rel]
		if old, ok := last[rel]; ok && old == s {
			continue
		}
		if err := copyEntry(root, src, rel, filepath.Join(target, rel), s); err != nil {
			return err
		}
	}
	for rel := range last {
		if _, ok := cur[rel]; !ok {
			_ = removeTreeBeneath(root, filepath.Join(target, rel))
		}
	}
	return nil
}

func copyEntry(root string, src int, rel, dst string, s fileSig) error {
	if s.mode&fs.ModeSymlink != 0 {
		_ = removeTreeBeneath(root, dst)
	}
	dir, err := openBeneath(root, filepath.Dir(dst), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(dir)
	name := filepath.Base(dst)
	switch {
	case s.mode.IsDir():
		if err := unix.Mkdirat(dir, name, uint32(s.mode.Perm())); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("mkdir %s: %w", dst, err)
		}
	case s.mode&fs.ModeSymlink != 0:
		if err := unix.Symlinkat(s.link, dir, name); err != nil {
			return fmt.Errorf("symlink %s: %w", dst, err)
		}
	case s.mode.IsRegular():
		return copyFileAtomic(src, rel, dir, name, s.mode.Perm())
	}
	return nil
}

func sortedKeys(m map[string]fileSig) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// Parents sort before their children.
	slices.Sort(keys)
	return keys
}

// copyFileAtomic copies the regular file rel below src (rel "" is src
// itself) to name in the directory dir, through a temporary file renamed
// over it. The file is opened from src without following symlinks, first
// as O_PATH to check that it is still a regular file (opening a FIFO or a
// device the host put there could block or act), then for reading
// through that descriptor.
func copyFileAtomic(src int, rel string, dir int, name string, perm fs.FileMode) error {
	pfd := src
	if rel != "" {
		var err error
		if pfd, err = openat2(src, rel, unix.O_PATH|unix.O_NOFOLLOW); err != nil {
			return fmt.Errorf("open %s: %w", rel, err)
		}
		defer unix.Close(pfd)
	}
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", rel, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%s is no longer a regular file", rel)
	}
	in, err := os.OpenFile(procPath(pfd), os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := name + ".wren-tmp"
	ofd, err := unix.Openat(dir, tmp, unix.O_CREAT|unix.O_TRUNC|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(perm))
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	out := os.NewFile(uintptr(ofd), tmp)
	_, err = io.Copy(out, io.LimitReader(in, watchMaxBytes+1))
	if err == nil {
		// Exact, whatever the umask made of the create.
		err = out.Chmod(perm)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(dir, tmp, dir, name)
	}
	if err != nil {
		_ = unix.Unlinkat(dir, tmp, 0)
	}
	return err
}
