package storage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/device"
	"github.com/wren-vm/wren/agent/errdefs"
)

// overlayRWOption asks for a writable overlay with upper and work
// directories made by the agent under <state root>/<container id>/.
const overlayRWOption = "io.katacontainers.fs-opt.overlay-rw"

// plainMount mounts source at the volume's mount point, creating it as a
// file when a bind source is a file.
func (m *Manager) plainMount(source, fstype string, v *Volume, opts []string) (*mountState, error) {
	mo, err := ParseOptions(opts)
	if err != nil {
		return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "options: %v", err)
	}
	file := mo.Flags&unix.MS_BIND != 0 && !isDirSource(source)
	created, err := makeMountPoint(m.stateRoot, v.MountPoint, file)
	if err != nil {
		return nil, err
	}
	if err := mountBeneath(m.stateRoot, v.MountPoint, source, fstype, mo); err != nil {
		_ = removeCreated(m.stateRoot, created)
		return nil, err
	}
	return &mountState{unmount: true, created: created}, nil
}

func fstypeOr(v *Volume, def string) string {
	if v.FSType != "" {
		return v.FSType
	}
	return def
}

func (m *Manager) mountVirtioFS(ctx context.Context, owner string, v *Volume) (*mountState, error) {
	if v.Source == "" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "virtio-fs storage without a tag")
	}
	// A guest image may mount the shared tag itself (Kata allows this too);
	// then there is nothing to do and nothing to undo.
	if v.Source == SharedTag {
		if fstype, ok := mountedFSType(v.MountPoint); ok && fstype == "virtiofs" {
			return &mountState{}, nil
		}
	}
	return m.plainMount(v.Source, fstypeOr(v, "virtiofs"), v, v.Options)
}

func (m *Manager) mount9P(ctx context.Context, owner string, v *Volume) (*mountState, error) {
	if v.Source == "" {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "9p storage without a tag")
	}
	return m.plainMount(v.Source, fstypeOr(v, "9p"), v, v.Options)
}

// fsgid parses the ephemeral/local "fsgid=N" option.
func fsgid(opts []string) (int, bool, error) {
	s, ok := optionValue(opts, "fsgid")
	if !ok {
		return 0, false, nil
	}
	g, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, false, errdefs.Errorf(errdefs.ErrInvalidArgument, "fsgid %q: %v", s, err)
	}
	return int(g), true, nil
}

func (m *Manager) mountEphemeral(ctx context.Context, owner string, v *Volume) (*mountState, error) {
	if v.FSType == "hugetlbfs" {
		return m.mountHugetlbfs(v)
	}
	if v.FSType != "" && v.FSType != "tmpfs" {
		return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "ephemeral storage of type %q; want tmpfs or hugetlbfs", v.FSType)
	}
	gid, hasGid, err := fsgid(v.Options)
	if err != nil {
		return nil, err
	}
	source := v.Source
	if source == "" {
		source = "tmpfs"
	}
	st, err := m.plainMount(source, "tmpfs", v, withoutOption(v.Options, "fsgid"))
	if err != nil {
		return nil, err
	}
	if hasGid {
		// The tmpfs just mounted, resolved again below the state root.
		fd, err := openBeneath(m.stateRoot, v.MountPoint, unix.O_PATH)
		if err == nil {
			err = setFSGid(fd, v.MountPoint, gid)
			unix.Close(fd)
		}
		if err != nil {
			_ = m.teardown(v.MountPoint, st)
			return nil, err
		}
	}
	return st, nil
}

// parseSize parses a hugetlbfs/tmpfs size: bytes with an optional k, M, G
// (binary) suffix.
func parseSize(s string) (uint64, error) {
	mult := uint64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		}
		if mult != 1 {
			s = s[:n-1]
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("size %q is not a positive number of bytes", s)
	}
	if v > (1<<63)/mult {
		return 0, fmt.Errorf("size %q overflows", s)
	}
	return v * mult, nil
}

// mountHugetlbfs reserves the hugepages a pod asked for (pagesize=, size=)
// before mounting, as Kata does, so the pod's memory is really there.
func (m *Manager) mountHugetlbfs(v *Volume) (*mountState, error) {
	ps, ok1 := optionValue(v.Options, "pagesize")
	sz, ok2 := optionValue(v.Options, "size")
	if !ok1 || !ok2 {
		return nil, errdefs.New(errdefs.ErrInvalidArgument, "hugetlbfs storage needs pagesize= and size= options")
	}
	pagesize, err := parseSize(ps)
	if err != nil {
		return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "hugetlbfs pagesize: %v", err)
	}
	size, err := parseSize(sz)
	if err != nil {
		return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "hugetlbfs size: %v", err)
	}
	if pagesize < 1<<12 || size%pagesize != 0 {
		return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "hugetlbfs size %d is not a multiple of pagesize %d", size, pagesize)
	}
	m.hugepages.Lock()
	defer m.hugepages.Unlock()
	undo, err := m.reserveHugepages(pagesize, size/pagesize)
	if err != nil {
		return nil, err
	}
	source := v.Source
	if source == "" {
		source = "nodev"
	}
	st, err := m.plainMount(source, "hugetlbfs", v, v.Options)
	if err != nil {
		undo()
		return nil, err
	}
	return st, nil
}

// reserveHugepages raises the kernel's pool of pagesize hugepages to at
// least pages. A failed request must not leave guest memory set aside:
// when the kernel reserves fewer, the pool goes back to its old size, and
// so it does through the returned undo (for a mount that then fails). A
// pool that was large enough is left as it is, and undo does nothing.
func (m *Manager) reserveHugepages(pagesize, pages uint64) (undo func(), err error) {
	p := filepath.Join(m.sysfs, "kernel/mm/hugepages", fmt.Sprintf("hugepages-%dkB", pagesize>>10), "nr_hugepages")
	read := func() (uint64, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return 0, err
		}
		return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	nothing := func() {}
	cur, err := read()
	if err != nil {
		return nothing, errdefs.Errorf(errdefs.ErrInvalidArgument, "hugepages of %d bytes unsupported: %v", pagesize, err)
	}
	if cur >= pages {
		return nothing, nil
	}
	restore := func() {
		if err := os.WriteFile(p, []byte(strconv.FormatUint(cur, 10)), 0); err != nil {
			m.log.Warn("hugepages pool not restored", "path", p, "pages", cur, "err", err)
		}
	}
	if err := os.WriteFile(p, []byte(strconv.FormatUint(pages, 10)), 0); err != nil {
		restore() // a write that failed part-way may still have grown the pool
		return nothing, fmt.Errorf("reserve %d hugepages: %w", pages, err)
	}
	if got, err := read(); err != nil || got < pages {
		restore()
		return nothing, errdefs.Errorf(errdefs.ErrResourceExhausted, "reserved %d of %d hugepages of %d bytes", got, pages, pagesize)
	}
	return restore, nil
}

func (m *Manager) mountLocal(ctx context.Context, owner string, v *Volume) (*mountState, error) {
	mode := uint64(0o777)
	if s, ok := optionValue(v.Options, "mode"); ok {
		var err error
		if mode, err = strconv.ParseUint(s, 8, 32); err != nil || mode > 0o7777 {
			return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "local storage mode %q is not octal permission bits", s)
		}
	}
	gid, hasGid, err := fsgid(v.Options)
	if err != nil {
		return nil, err
	}
	created, err := makeMountPoint(m.stateRoot, v.MountPoint, false)
	if err != nil {
		return nil, err
	}
	st := &mountState{created: created}
	if len(created) > 0 {
		// A directory we made is the volume itself: it goes with it.
		st.removeTree = []string{v.MountPoint}
	}
	fail := func(err error) (*mountState, error) {
		_ = m.teardown(v.MountPoint, st)
		return nil, err
	}
	fd, err := openBeneath(m.stateRoot, v.MountPoint, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return fail(err)
	}
	defer unix.Close(fd)
	if len(created) == 0 {
		// A directory that was there before outlives the volume: it gets
		// its owner and mode back when the volume goes, or the request
		// fails.
		var before unix.Stat_t
		if err := unix.Fstat(fd, &before); err != nil {
			return fail(fmt.Errorf("stat %s: %w", v.MountPoint, err))
		}
		st.restore = []savedAttr{saved("", &before)}
	}
	if err := unix.Chmod(procPath(fd), uint32(mode)); err != nil {
		return fail(fmt.Errorf("chmod %s: %w", v.MountPoint, err))
	}
	if hasGid {
		if err := setFSGid(fd, v.MountPoint, gid); err != nil {
			return fail(err)
		}
	}
	return st, nil
}

func (m *Manager) mountOverlay(ctx context.Context, owner string, v *Volume) (*mountState, error) {
	opts := slices.Clone(v.Options)
	var extra []string
	if slices.Contains(v.Options, overlayRWOption) {
		if owner == "" || strings.ContainsAny(owner, "/\x00") || owner == "." || owner == ".." {
			return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "writable overlay needs a container id, got %q", owner)
		}
		base := filepath.Join(m.stateRoot, owner)
		for _, d := range []string{"upper", "work"} {
			dir := filepath.Join(base, d)
			made, err := makeMountPoint(m.stateRoot, dir, false)
			if err != nil {
				_ = removeCreated(m.stateRoot, extra)
				return nil, err
			}
			extra = append(extra, made...)
			opts = append(opts, d+"dir="+dir)
		}
	}
	source := v.Source
	if source == "" {
		source = "overlay"
	}
	st, err := m.plainMount(source, "overlay", v, opts)
	if err != nil {
		_ = removeCreated(m.stateRoot, extra)
		return nil, err
	}
	// The upper and work directories hold the container's writes: they go
	// when the overlay does. The state root, when this made it, is only
	// removed if empty.
	var rootMade []string
	for _, d := range extra {
		if within(m.stateRoot, d) {
			st.removeTree = append(st.removeTree, d)
		} else {
			rootMade = append(rootMade, d)
		}
	}
	st.created = append(rootMade, st.created...)
	return st, nil
}

// blockMount mounts a resolved block device node.
func (m *Manager) blockMount(dev string, v *Volume) (*mountState, error) {
	if v.FSType == "" {
		return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "block storage %s without fstype", v.Source)
	}
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return nil, errdefs.Errorf(errdefs.ErrNotFound, "block device %s: %v", dev, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "%s is not a block device", dev)
	}
	return m.plainMount(dev, v.FSType, v, v.Options)
}

// blockDriver is how a block storage driver finds the device its Source
// names.
type blockDriver struct {
	// resolve waits for the device to appear and returns its node.
	resolve func(d *device.Devices, ctx context.Context, source string) (string, error)
	// nodePaths: a Source that is a path names the node itself, as in
	// Kata's agent (a device that was not hot-plugged); it must be below
	// /dev.
	nodePaths bool
}

// blockDrivers is the one table of the block storage drivers.
var blockDrivers = map[string]blockDriver{
	DriverBlk:     {resolve: (*device.Devices).BlockByPCIPath, nodePaths: true},
	DriverMMIOBlk: {resolve: (*device.Devices).BlockByName},
	DriverSCSI:    {resolve: (*device.Devices).BlockBySCSIAddr},
	DriverNVDIMM:  {resolve: (*device.Devices).BlockByName},
}

// mountBlockDevice mounts the device of a block driver's volume, once the
// device has appeared.
func (m *Manager) mountBlockDevice(ctx context.Context, owner string, v *Volume) (*mountState, error) {
	bd := blockDrivers[v.Driver]
	if bd.nodePaths && strings.HasPrefix(v.Source, "/") {
		if !strings.HasPrefix(v.Source, "/dev/") {
			return nil, errdefs.Errorf(errdefs.ErrInvalidArgument, "%s source %q is neither a PCI path nor a /dev path", v.Driver, v.Source)
		}
		return m.blockMount(v.Source, v)
	}
	if m.devs == nil {
		return nil, errdefs.Errorf(errdefs.ErrFailedPrecondition, "%s storage needs the uevent listener", v.Driver)
	}
	dev, err := bd.resolve(m.devs, ctx, v.Source)
	if err != nil {
		return nil, err
	}
	return m.blockMount(dev, v)
}

func isReadOnly(opts []string) bool {
	mo, err := ParseOptions(opts)
	return err == nil && mo.Flags&unix.MS_RDONLY != 0
}
