// Package storage mounts the Storage entries of CreateSandbox and
// CreateContainer with Kata's drivers and guest path layout, reference
// counts them by mount point across containers, and unmounts them on
// RemoveContainer and DestroySandbox.
package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/device"
	"github.com/wren-vm/wren/agent/errdefs"
)

// Storage drivers (Storage.driver), as Kata's runtime names them.
const (
	DriverVirtioFS      = "virtio-fs"
	Driver9P            = "9p"
	DriverLocal         = "local"
	DriverEphemeral     = "ephemeral"
	DriverOverlayFS     = "overlayfs"
	DriverBlk           = "blk"
	DriverMMIOBlk       = "mmioblk"
	DriverSCSI          = "scsi"
	DriverNVDIMM        = "nvdimm"
	DriverWatchableBind = "watchable-bind"
)

// Drivers lists the storage handlers, as reported in AgentDetails.
func Drivers() []string {
	return []string{DriverVirtioFS, Driver9P, DriverLocal, DriverEphemeral, DriverOverlayFS,
		DriverBlk, DriverMMIOBlk, DriverSCSI, DriverNVDIMM, DriverWatchableBind}
}

// SharedTag is the virtio-fs tag of the sandbox's shared directory.
const SharedTag = "kataShared"

// DefaultStateRoot is Kata's agent state directory in the guest.
const DefaultStateRoot = "/run/kata-containers"

// SharedDir is where the shared filesystem is mounted below the state root.
func SharedDir(stateRoot string) string {
	return filepath.Join(stateRoot, "shared", "containers")
}

// Volume is one Storage message in the agent's terms.
type Volume struct {
	Driver        string
	DriverOptions []string
	Source        string
	FSType        string
	Options       []string
	MountPoint    string
	FSGroup       *FSGroup
	// Shared volumes stay mounted until ReleaseAll, even when no container
	// refers to them any more.
	Shared bool
}

// FSGroup is Kubernetes' fsGroup for a volume.
type FSGroup struct {
	GID uint32
	// OnRootMismatch skips the recursive walk when the root already has
	// the group and mode (GroupChangePolicy OnRootMismatch); else Always.
	OnRootMismatch bool
}

// Options configures a Manager.
type Options struct {
	// StateRoot is the agent state directory; "" means DefaultStateRoot.
	StateRoot string
	// SysfsRoot is where sysfs is mounted; "" means /sys.
	SysfsRoot string
	// Devices resolves hot-plugged block devices; nil limits blk to /dev
	// paths and makes mmioblk, scsi and nvdimm fail.
	Devices *device.Devices
	// WatchInterval is how often watchable-bind copies are refreshed;
	// 0 means Kata's 2s.
	WatchInterval time.Duration
	Log           *slog.Logger
}

// Manager owns every mount the agent makes for storages.
type Manager struct {
	log       *slog.Logger
	stateRoot string
	sysfs     string
	devs      *device.Devices
	watch     *bindWatcher

	// mu guards the maps, seq and each entry's pending count. It is taken
	// only briefly and never while waiting for an entry's lock; mounting
	// happens under the entry's own lock.
	mu      sync.Mutex
	entries map[string]*entry
	owners  map[string][]string // owner → mount points, one per reference, in order
	seq     uint64

	// hugepages makes hugetlbfs requests one at a time, from reading the
	// pool's size to the mount: a failed request puts back the size it
	// read, which must not undo a reservation another request made and
	// mounted on meanwhile. Only hugetlbfs requests wait on it.
	hugepages sync.Mutex
}

// entry is one mount point. Lock order: entry.mu before Manager.mu.
type entry struct {
	mu      sync.Mutex
	path    string
	driver  string
	shared  bool
	seq     uint64
	state   *mountState // nil when nothing is mounted
	refs    map[string]int
	pending int // requests holding this entry; guarded by Manager.mu
	// madeBy is the owner whose request mounted the entry, while madeByLive:
	// until that owner lets go of it, Rollback(madeBy) undoes the mount even
	// when it is shared.
	madeBy     string
	madeByLive bool
}

// mountState records what mounting a volume did, so it can be undone.
type mountState struct {
	unmount    bool        // a mount at the mount point is ours
	created    []string    // mount point and parents we made, outermost first
	removeTree []string    // directories we made whose content dies with the volume
	restore    []savedAttr // owners and modes changed on what was there before
	watched    bool        // registered with the bind watcher
}

// New returns a Manager.
func New(opts Options) *Manager {
	m := &Manager{
		log:       opts.Log,
		stateRoot: opts.StateRoot,
		sysfs:     opts.SysfsRoot,
		devs:      opts.Devices,
		entries:   map[string]*entry{},
		owners:    map[string][]string{},
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	m.log = m.log.With("component", "storage")
	if m.stateRoot == "" {
		m.stateRoot = DefaultStateRoot
	}
	m.stateRoot = filepath.Clean(m.stateRoot)
	if m.sysfs == "" {
		m.sysfs = "/sys"
	}
	interval := opts.WatchInterval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	m.watch = newBindWatcher(m.log, m.stateRoot, filepath.Join(SharedDir(m.stateRoot), "watchable"), interval)
	return m
}

// StateRoot is the agent state directory the manager lays volumes out in.
func (m *Manager) StateRoot() string { return m.stateRoot }

type driverFunc func(m *Manager, ctx context.Context, owner string, v *Volume) (*mountState, error)

var drivers = map[string]driverFunc{
	DriverVirtioFS:      (*Manager).mountVirtioFS,
	Driver9P:            (*Manager).mount9P,
	DriverLocal:         (*Manager).mountLocal,
	DriverEphemeral:     (*Manager).mountEphemeral,
	DriverOverlayFS:     (*Manager).mountOverlay,
	DriverBlk:           (*Manager).mountBlockDevice,
	DriverMMIOBlk:       (*Manager).mountBlockDevice,
	DriverSCSI:          (*Manager).mountBlockDevice,
	DriverNVDIMM:        (*Manager).mountBlockDevice,
	DriverWatchableBind: (*Manager).mountWatchable,
}

func (m *Manager) validate(v *Volume) error {
	if _, ok := drivers[v.Driver]; !ok {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "unknown storage driver %q", v.Driver)
	}
	// Kata's runtime names the shared directory with a trailing slash
	// ("/run/kata-containers/shared/containers/"): normalise, so that
	// reference counting sees one mount point.
	if v.MountPoint == "" || !filepath.IsAbs(v.MountPoint) || filepath.Clean(v.MountPoint) == "/" {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "storage mount point %q must be an absolute path other than /", v.MountPoint)
	}
	v.MountPoint = filepath.Clean(v.MountPoint)
	if err := m.checkMountPoint(v.Driver, v.MountPoint); err != nil {
		return err
	}
	mo, err := ParseOptions(v.Options)
	if err != nil {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "storage at %s: %v", v.MountPoint, err)
	}
	if mo.Flags&unix.MS_BIND != 0 && !bindAllowed[v.Driver] {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "storage at %s: driver %s does not bind-mount (bind/rbind option)", v.MountPoint, v.Driver)
	}
	return nil
}

// bindAllowed lists the drivers whose options may ask for a bind mount.
// The block drivers bind only a device node they resolved and checked
// themselves (Kata's runtime sends "bind" for raw block volumes);
// watchable-bind and local ignore mount options. The others mount a tag or
// a pseudo source ("tmpfs", "overlay"), which MS_BIND would turn into a
// guest path, exposing any directory of the guest at the mount point.
var bindAllowed = map[string]bool{
	DriverBlk:           true,
	DriverMMIOBlk:       true,
	DriverSCSI:          true,
	DriverNVDIMM:        true,
	DriverWatchableBind: true,
	DriverLocal:         true,
}

// MountVolumes mounts vols for owner (a container id, or "" for the
// sandbox). A mount point already mounted only gains a reference. On error
// every reference taken by this call is dropped, and what it mounted and
// created is removed again.
func (m *Manager) MountVolumes(ctx context.Context, owner string, vols []Volume) error {
	vols = slices.Clone(vols) // validate normalises mount points
	for i := range vols {
		if err := m.validate(&vols[i]); err != nil {
			return err
		}
	}
	type taken struct {
		e     *entry
		fresh bool
	}
	var done []taken
	for i := range vols {
		e, fresh, err := m.mountOne(ctx, owner, &vols[i])
		if err != nil {
			for j := len(done) - 1; j >= 0; j-- {
				if rerr := m.dropRef(done[j].e, owner, done[j].fresh); rerr != nil {
					m.log.Error("rollback of storage failed", "mount_point", done[j].e.path, "err", rerr)
				}
			}
			return fmt.Errorf("storage %s (driver %s): %w", vols[i].MountPoint, vols[i].Driver, err)
		}
		done = append(done, taken{e, fresh})
	}
	return nil
}

func (m *Manager) mountOne(ctx context.Context, owner string, v *Volume) (*entry, bool, error) {
	m.mu.Lock()
	e := m.entries[v.MountPoint]
	if e == nil {
		e = &entry{path: v.MountPoint, refs: map[string]int{}}
		m.entries[v.MountPoint] = e
	}
	e.pending++
	m.mu.Unlock()

	e.mu.Lock()
	defer e.mu.Unlock()
	fresh := false
	var err error
	if e.state == nil {
		var st *mountState
		st, err = drivers[v.Driver](m, ctx, owner, v)
		if err == nil && v.FSGroup != nil {
			var record func(savedAttr)
			if !st.unmount && len(st.created) == 0 {
				// Not a filesystem of ours but what was there before (a
				// local volume's directory, a shared filesystem mounted
				// by the image): it gets its owners and modes back.
				record = func(a savedAttr) { st.restore = append(st.restore, a) }
			}
			if ferr := applyFSGroup(m.log, m.stateRoot, v.MountPoint, *v.FSGroup, isReadOnly(v.Options), record); ferr != nil {
				if terr := m.teardown(v.MountPoint, st); terr != nil {
					m.log.Error("undoing storage after fs_group failure", "mount_point", v.MountPoint, "err", terr)
				}
				err = fmt.Errorf("fs_group: %w", ferr)
			}
		}
		if err == nil {
			e.state, e.driver, e.shared, fresh = st, v.Driver, v.Shared, true
			e.madeBy, e.madeByLive = owner, true
		}
	} else if v.Shared {
		e.shared = true
	}
	if err == nil {
		e.refs[owner]++
	}

	m.mu.Lock()
	e.pending--
	if err == nil {
		if fresh {
			m.seq++
			e.seq = m.seq
		}
		m.owners[owner] = append(m.owners[owner], v.MountPoint)
	}
	m.forgetIfIdle(e)
	m.mu.Unlock()
	return e, fresh, err
}

// unpin releases a pin (pending) taken under m.mu without a reference.
func (m *Manager) unpin(e *entry) {
	e.mu.Lock()
	m.mu.Lock()
	e.pending--
	m.forgetIfIdle(e)
	m.mu.Unlock()
	e.mu.Unlock()
}

// forgetIfIdle drops an entry nobody holds. Caller holds e.mu and m.mu.
func (m *Manager) forgetIfIdle(e *entry) {
	if e.state == nil && len(e.refs) == 0 && e.pending == 0 && m.entries[e.path] == e {
		delete(m.entries, e.path)
	}
}

// dropRef removes one reference of owner to e and tears the mount down when
// it was the last one (for shared volumes only when force is set, i.e. the
// rollback of the request that mounted it).
func (m *Manager) dropRef(e *entry, owner string, force bool) error {
	m.mu.Lock()
	e.pending++
	if list := m.owners[owner]; len(list) > 0 {
		for i := len(list) - 1; i >= 0; i-- {
			if list[i] == e.path {
				m.owners[owner] = slices.Delete(list, i, i+1)
				break
			}
		}
		if len(m.owners[owner]) == 0 {
			delete(m.owners, owner)
		}
	}
	m.mu.Unlock()
	return m.release(e, owner, force, false)
}

// release drops one reference; e must be pinned (pending) by the caller,
// and release unpins it. A shared volume goes only when force is set, or
// when rollback is and owner's request mounted it.
func (m *Manager) release(e *entry, owner string, force, rollback bool) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.refs[owner] > 0 {
		e.refs[owner]--
		if e.refs[owner] == 0 {
			delete(e.refs, owner)
		}
	}
	if e.madeByLive && e.madeBy == owner {
		force = force || rollback
		if e.refs[owner] == 0 {
			// From now on the mount is no longer the request's to undo.
			e.madeByLive = false
		}
	}
	var err error
	if len(e.refs) == 0 && e.state != nil && (!e.shared || force) {
		if err = m.teardown(e.path, e.state); err == nil {
			e.state = nil
		}
	}
	m.mu.Lock()
	e.pending--
	m.forgetIfIdle(e)
	m.mu.Unlock()
	return err
}

// Release drops every reference owner holds, unmounting what no one else
// uses. Shared volumes stay until ReleaseAll.
func (m *Manager) Release(ctx context.Context, owner string) error {
	return m.releaseOwner(owner, false)
}

// Rollback is Release for a request that failed after its storages were
// mounted (CreateContainer, CreateSandbox): shared volumes that owner's
// request mounted and no one else uses go as well, since the request that
// wanted them did not happen.
func (m *Manager) Rollback(ctx context.Context, owner string) error {
	return m.releaseOwner(owner, true)
}

func (m *Manager) releaseOwner(owner string, rollback bool) error {
	m.mu.Lock()
	paths := m.owners[owner]
	delete(m.owners, owner)
	es := make([]*entry, 0, len(paths))
	for _, p := range paths {
		if e := m.entries[p]; e != nil {
			e.pending++
			es = append(es, e)
		}
	}
	m.mu.Unlock()
	var errs []error
	for i := len(es) - 1; i >= 0; i-- {
		if err := m.release(es[i], owner, false, rollback); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ReleaseAll unmounts everything, newest first, shared volumes included.
func (m *Manager) ReleaseAll(ctx context.Context) error {
	m.mu.Lock()
	m.owners = map[string][]string{}
	es := make([]*entry, 0, len(m.entries))
	for _, e := range m.entries {
		e.pending++
		es = append(es, e)
	}
	m.mu.Unlock()
	slices.SortFunc(es, func(a, b *entry) int {
		switch {
		case a.seq > b.seq:
			return -1
		case a.seq < b.seq:
			return 1
		}
		return 0
	})
	var errs []error
	for _, e := range es {
		e.mu.Lock()
		clear(e.refs)
		e.madeByLive = false
		if e.state != nil {
			if err := m.teardown(e.path, e.state); err != nil {
				errs = append(errs, err)
			} else {
				e.state = nil
			}
		}
		m.mu.Lock()
		e.pending--
		m.forgetIfIdle(e)
		m.mu.Unlock()
		e.mu.Unlock()
	}
	if err := m.watch.stopAll(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// teardown undoes one mountState.
func (m *Manager) teardown(path string, st *mountState) error {
	if st == nil {
		return nil
	}
	if st.watched {
		if err := m.watch.remove(path); err != nil {
			return err
		}
	}
	if st.unmount {
		if err := unmountBeneath(m.stateRoot, path); err != nil {
			return err
		}
	}
	var errs []error
	if err := restoreAttrs(m.stateRoot, path, st.restore); err != nil {
		errs = append(errs, err)
	}
	for _, d := range st.removeTree {
		if err := removeTreeBeneath(m.stateRoot, d); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeCreated(m.stateRoot, st.created); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		m.log.Warn("storage cleanup incomplete", "mount_point", path, "err", errors.Join(errs...))
	}
	return nil
}

// Mounted reports the mount points currently held and their reference
// counts (for diagnostics and tests).
func (m *Manager) Mounted() map[string]int {
	m.mu.Lock()
	es := make([]*entry, 0, len(m.entries))
	for _, e := range m.entries {
		es = append(es, e)
	}
	m.mu.Unlock()
	out := map[string]int{}
	for _, e := range es {
		e.mu.Lock()
		if e.state != nil {
			n := 0
			for _, c := range e.refs {
				n += c
			}
			out[e.path] = n
		}
		e.mu.Unlock()
	}
	return out
}
