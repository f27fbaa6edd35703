// Package guestmem maps a virtual machine's RAM, as described by a
// vhost-user memory table, and translates guest-physical and frontend-virtual
// addresses into bounds-checked byte slices.
//
// Every address the guest supplies goes through Slice, which only ever
// returns a sub-slice of one region: a buggy or hostile guest can make a
// lookup fail but never make the backend touch memory outside its RAM.
package guestmem

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrOutOfRange reports an address range that does not lie entirely inside
// one region of guest memory.
var ErrOutOfRange = errors.New("address range outside guest memory")

// Region is one contiguous piece of guest RAM.
type Region struct {
	GuestPhysAddr uint64 // where the guest sees it
	UserAddr      uint64 // where the frontend (QEMU) has it mapped
	Data          []byte // our mapping, len(Data) is the region size
}

// Memory is an immutable set of regions. Replacing the memory table builds a
// new Memory; the owner swaps it in under its own lock and then calls Close
// on the old one.
type Memory struct {
	regions []Region
	unmap   [][]byte // mmaps to release on Close (nil for test memory)
}

// New builds a Memory over caller-owned byte slices (used by tests, which
// model the guest's RAM as ordinary Go memory). Regions must not overlap.
func New(regions []Region) (*Memory, error) {
	m := &Memory{}
	for i, r := range regions {
		if len(r.Data) == 0 {
			return nil, fmt.Errorf("region %d: empty", i)
		}
		if end := r.GuestPhysAddr + uint64(len(r.Data)); end < r.GuestPhysAddr {
			return nil, fmt.Errorf("region %d: guest range wraps", i)
		}
		if end := r.UserAddr + uint64(len(r.Data)); end < r.UserAddr {
			return nil, fmt.Errorf("region %d: user range wraps", i)
		}
		for j, o := range m.regions {
			if overlaps(r.GuestPhysAddr, uint64(len(r.Data)), o.GuestPhysAddr, uint64(len(o.Data))) {
				return nil, fmt.Errorf("region %d overlaps region %d", i, j)
			}
		}
		m.regions = append(m.regions, r)
	}
	return m, nil
}

func overlaps(a, alen, b, blen uint64) bool {
	return a < b+blen && b < a+alen
}

// MapRegion describes one region of a vhost-user SET_MEM_TABLE message.
type MapRegion struct {
	GuestPhysAddr uint64
	Size          uint64
	UserAddr      uint64
	MmapOffset    uint64
	File          *os.File
}

// maxRegionSize bounds a single mapping so that a bogus table cannot make us
// reserve absurd amounts of address space (1 TiB is far above any VM we run).
const maxRegionSize = 1 << 40

// Map mmaps every region's file (shared, read-write) and returns the Memory.
// It does not close the files; the caller does that whether Map fails or not.
func Map(regions []MapRegion) (*Memory, error) {
	m := &Memory{}
	pageSize := uint64(os.Getpagesize())
	for i, r := range regions {
		if r.Size == 0 || r.Size > maxRegionSize {
			m.Close()
			return nil, fmt.Errorf("region %d: bad size %d", i, r.Size)
		}
		// Touching a mapping past the end of its file is SIGBUS, so the
		// region must lie inside the file.
		var st unix.Stat_t
		if err := unix.Fstat(int(r.File.Fd()), &st); err != nil {
			m.Close()
			return nil, fmt.Errorf("region %d: fstat: %w", i, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG && (r.MmapOffset > uint64(st.Size) || r.Size > uint64(st.Size)-r.MmapOffset) {
			m.Close()
			return nil, fmt.Errorf("region %d: offset %#x size %#x beyond the %d-byte file", i, r.MmapOffset, r.Size, st.Size)
		}
		// mmap wants a page-aligned offset: map from the page start and
		// slice off the head.
		head := r.MmapOffset % pageSize
		off := r.MmapOffset - head
		data, err := unix.Mmap(int(r.File.Fd()), int64(off), int(head+r.Size),
			unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("mmap region %d (offset %#x size %#x): %w", i, r.MmapOffset, r.Size, err)
		}
		m.unmap = append(m.unmap, data)
		reg := Region{GuestPhysAddr: r.GuestPhysAddr, UserAddr: r.UserAddr, Data: data[head:]}
		if _, err := New(append(append([]Region(nil), m.regions...), reg)); err != nil {
			m.Close()
			return nil, err
		}
		m.regions = append(m.regions, reg)
	}
	return m, nil
}

// Close unmaps the regions that Map created. The Memory must not be used
// afterwards.
func (m *Memory) Close() {
	if m == nil {
		return
	}
	for _, d := range m.unmap {
		_ = unix.Munmap(d)
	}
	m.unmap = nil
	m.regions = nil
}

// Slice returns the n bytes at guest-physical address gpa. The range must lie
// in one region; ranges straddling two regions are rejected (Linux never
// builds a descriptor across a memory hole).
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	for _, r := range m.regions {
		size := uint64(len(r.Data))
		if gpa >= r.GuestPhysAddr && gpa-r.GuestPhysAddr < size {
			off := gpa - r.GuestPhysAddr
			if n > size-off {
				break
			}
			return r.Data[off : off+n : off+n], nil
		}
	}
	return nil, fmt.Errorf("%w: [%#x, +%#x)", ErrOutOfRange, gpa, n)
}

// UserToGuest translates a frontend virtual address (as carried by
// SET_VRING_ADDR) into a guest-physical address.
func (m *Memory) UserToGuest(uva uint64) (uint64, error) {
	for _, r := range m.regions {
		if uva >= r.UserAddr && uva-r.UserAddr < uint64(len(r.Data)) {
			return r.GuestPhysAddr + (uva - r.UserAddr), nil
		}
	}
	return 0, fmt.Errorf("%w: user address %#x", ErrOutOfRange, uva)
}

// Regions reports how many regions are mapped.
func (m *Memory) Regions() int { return len(m.regions) }
