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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wren-vm/wren/agent/fsremove"
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

func newBindWatcher(log *slog.Logger, root, dir string, interval time.Duration) *bindWatcher {
	return &bindWatcher{log: log, root: root, dir: dir, interval: interval, items: map[string]*watchedItem{}}
}

func (m *Manager) mountWatchable(ctx context.Context, owner string, v *Volume) (*mountState, error) {
	if v.Source == "" {
		return nil, status.Error(codes.InvalidArgument, "watchable-bind storage without a source")
	}
	if err := m.watch.add(SharedDir(m.stateRoot), v.Source, v.MountPoint); err != nil {
		return nil, err
	}
	return &mountState{watched: true}, nil
}

// confineSource checks that source, with its symlinks resolved, lies below
// the shared directory the host fills and outside the tmpfs of copies. The
// host names the source; without this a request could have any guest file
// (the agent's own state, /etc) copied into a container's view.
func confineSource(shared, copies, source string) error {
	if !filepath.IsAbs(source) {
		return status.Errorf(codes.InvalidArgument, "watchable-bind source %q is not an absolute path", source)
	}
	resolved, err := filepath.EvalSymlinks(source)
	if errors.Is(err, fs.ErrNotExist) {
		return status.Errorf(codes.NotFound, "watchable-bind source %s does not exist", source)
	}
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "watchable-bind source %s: %v", source, err)
	}
	resolvedRoot := func(dir string) string {
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			return r
		}
		return filepath.Clean(dir)
	}
	if !within(resolvedRoot(shared), resolved) {
		return status.Errorf(codes.InvalidArgument, "watchable-bind source %s (%s) is not below the shared directory %s", source, resolved, shared)
	}
	if c := resolvedRoot(copies); resolved == c || within(c, resolved) {
		return status.Errorf(codes.InvalidArgument, "watchable-bind source %s is inside the watcher's own copies", source)
	}
	return nil
}

func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../")
}

func (w *bindWatcher) add(shared, source, target string) error {
	if !within(w.dir, target) {
		return status.Errorf(codes.InvalidArgument, "watchable-bind mount point %s is not below %s", target, w.dir)
	}
	if err := confineSource(shared, w.dir, source); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.items[target]; ok {
		return status.Errorf(codes.AlreadyExists, "watchable-bind %s already watched", target)
	}
	if err := w.ensureTmpfs(); err != nil {
		return err
	}
	it := &watchedItem{root: w.root, source: source, target: target, shared: shared, copies: w.dir}
	if err := it.refresh(); err != nil {
		_ = it.undo()
		w.dropTmpfsIfIdle()
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
	if err := confineSource(it.shared, it.copies, it.source); err != nil {
		return err
	}
	cur, err := scanSource(it.source)
	if err != nil {
		return err
	}
	if it.created == nil && it.last == nil {
		parent := filepath.Dir(it.target)
		if it.created, err = makeMountPoint(it.root, parent, false); err != nil {
			return err
		}
	}
	if overLimits(cur) {
		return it.bindFallback()
	}
	if sameSigs(cur, it.last) {
		return nil
	}
	if err := syncCopy(it.source, it.target, cur, it.last); err != nil {
		return err
	}
	it.last = cur
	return nil
}

func (it *watchedItem) bindFallback() error {
	file := !isDirSource(it.source)
	if _, err := os.Lstat(it.target); errors.Is(err, fs.ErrNotExist) {
		if _, err := makeMountPoint(it.root, it.target, file); err != nil {
			return err
		}
	}
	if err := mountBeneath(it.root, it.target, it.source, "", MountOptions{Flags: unix.MS_BIND | unix.MS_REC}); err != nil {
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

// scanSource lists source ("" is the source itself) without following
// symlinks below it; it stops early once past the limits.
func scanSource(source string) (map[string]fileSig, error) {
	sigs := map[string]fileSig{}
	files := 0
	err := filepath.WalkDir(source, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(source, p)
		if rel == "." {
			rel = ""
		}
		info, err := d.Info()
		if p == source {
			info, err = os.Stat(p)
		}
		if err != nil {
			return err
		}
		s := fileSig{mode: info.Mode(), size: info.Size(), mtime: info.ModTime()}
		if info.Mode()&fs.ModeSymlink != 0 {
			if s.link, err = os.Readlink(p); err != nil {
				return err
			}
			s.size = 0
		}
		sigs[rel] = s
		if !info.IsDir() {
			if files++; files > watchMaxEntries {
				return filepath.SkipAll
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", source, err)
	}
	return sigs, nil
}

// syncCopy makes target a copy of source: new and changed entries are
// written (files through a rename, so readers never see half a file),
// vanished ones removed.
func syncCopy(source, target string, cur, last map[string]fileSig) error {
	for _, rel := range sortedKeys(cur) {
		s := cur[rel]
		if old, ok := last[rel]; ok && old == s {
			continue
		}
		src, dst := filepath.Join(source, rel), filepath.Join(target, rel)
		switch {
		case s.mode.IsDir():
			if err := os.Mkdir(dst, s.mode.Perm()); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
		case s.mode&fs.ModeSymlink != 0:
			_ = fsremove.All(dst)
			if err := os.Symlink(s.link, dst); err != nil {
				return err
			}
		case s.mode.IsRegular():
			if err := copyFileAtomic(src, dst, s.mode.Perm()); err != nil {
				return err
			}
		}
	}
	for rel := range last {
		if _, ok := cur[rel]; !ok {
			_ = fsremove.All(filepath.Join(target, rel))
		}
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

func copyFileAtomic(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".wren-tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|unix.O_NOFOLLOW, perm)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, io.LimitReader(in, watchMaxBytes+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, perm)
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}
