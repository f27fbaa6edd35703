// Package virtqtest is an in-memory virtio driver for tests: it lays out a
// split virtqueue in a Go byte slice standing in for guest RAM, posts
// descriptor chains the way a guest driver does, and collects used entries.
// It can also write arbitrary (malformed) descriptors and avail entries.
package virtqtest

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/wren-vm/wren/vsockd/guestmem"
	"github.com/wren-vm/wren/vsockd/virtq"
)

// Base is the guest-physical address where the test RAM starts; it is not 0
// so that address arithmetic bugs show.
const Base = 0x10000

// Driver is the guest side of one queue.
type Driver struct {
	Mem    *guestmem.Memory
	RAM    []byte
	Layout virtq.Layout

	size      uint16
	base      uint64
	availIdx  uint16
	usedSeen  uint16
	free      []uint16
	heap      uint64 // next free byte in RAM for buffers
	chains    map[uint16][]Seg
	chainBufs map[uint16][]uint64 // GPA of each segment
}

// Seg is one buffer of a chain: readable with Data, or device-writable of
// WriteLen bytes.
type Seg struct {
	Data     []byte
	WriteLen int
}

// Used is a completed chain.
type Used struct {
	Head    uint16
	Len     uint32
	Written []byte // the chain's writable bytes, concatenated, up to Len
}

// New makes ramSize bytes of guest RAM at Base holding one queue of size
// entries.
func New(ramSize int, size uint16) *Driver {
	return NewRAM(make([]byte, ramSize), Base, size)
}

// NewRAM lays out a queue of size entries at the start of ram, which the
// guest sees at guest-physical address base; the rest of ram holds buffers.
func NewRAM(ram []byte, base uint64, size uint16) *Driver {
	mem, err := guestmem.New([]guestmem.Region{{GuestPhysAddr: base, UserAddr: 0x7f0000000000, Data: ram}})
	if err != nil {
		panic(err)
	}
	n := uint64(size)
	desc := base
	avail := desc + 16*n
	used := (avail + 6 + 2*n + 3) &^ 3
	d := &Driver{
		Mem: mem, RAM: ram, size: size, base: base,
		Layout:    virtq.Layout{Size: size, DescAddr: desc, AvailAddr: avail, UsedAddr: used},
		chains:    map[uint16][]Seg{},
		chainBufs: map[uint16][]uint64{},
	}
	d.heap = d.heapStart()
	for i := uint16(0); i < size; i++ {
		d.free = append(d.free, i)
	}
	return d
}

func (d *Driver) heapStart() uint64 {
	return ((d.Layout.UsedAddr + 6 + 8*uint64(d.size) + 15) &^ 15) - d.base
}

func (d *Driver) off(gpa uint64) []byte { return d.RAM[gpa-d.base:] }

// Alloc reserves n bytes of RAM for buffers and returns their address.
func (d *Driver) Alloc(n int) uint64 {
	// A bump allocator that wraps: tests keep far less in flight than RAM.
	if d.heap+uint64(n) > uint64(len(d.RAM)) {
		d.heap = d.heapStart()
	}
	gpa := d.base + d.heap
	d.heap += uint64(n+15) &^ 15
	return gpa
}

// Free reports how many descriptors are free.
func (d *Driver) Free() int { return len(d.free) }

// Post makes a chain of segs available and returns its head, or false when
// there are not enough free descriptors.
func (d *Driver) Post(segs ...Seg) (uint16, bool) {
	if len(segs) == 0 || len(segs) > len(d.free) {
		return 0, false
	}
	idx := d.free[:len(segs)]
	d.free = d.free[len(segs):]
	var addrs []uint64
	for i, s := range segs {
		n := len(s.Data)
		flags := uint16(0)
		if s.WriteLen > 0 {
			n = s.WriteLen
			flags |= virtq.DescFWrite
		}
		gpa := d.Alloc(n)
		copy(d.off(gpa), s.Data)
		addrs = append(addrs, gpa)
		next := uint16(0)
		if i+1 < len(segs) {
			flags |= virtq.DescFNext
			next = idx[i+1]
		}
		d.SetDesc(idx[i], gpa, uint32(n), flags, next)
	}
	head := idx[0]
	d.chains[head] = segs
	d.chainBufs[head] = addrs
	d.PublishHead(head)
	return head, true
}

// SetDesc writes descriptor i verbatim.
func (d *Driver) SetDesc(i uint16, addr uint64, length uint32, flags, next uint16) {
	b := d.off(d.Layout.DescAddr + 16*uint64(i))
	binary.LittleEndian.PutUint64(b[0:], addr)
	binary.LittleEndian.PutUint32(b[8:], length)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
}

// PublishHead puts head (any value) in the next avail slot and bumps avail.idx.
func (d *Driver) PublishHead(head uint16) {
	slot := uint64(d.availIdx % d.size)
	binary.LittleEndian.PutUint16(d.off(d.Layout.AvailAddr+4+2*slot), head)
	d.availIdx++
	d.SetAvailIdx(d.availIdx)
}

// availWord is the 4-byte word holding avail.idx (and avail.flags when the
// ring is 4-byte aligned). The driver publishes with atomic stores, as a
// real driver's release barrier, so the race detector sees the same
// ordering the device relies on.
func (d *Driver) availWord() (*uint32, bool) {
	if d.Layout.AvailAddr%4 == 0 {
		return (*uint32)(unsafe.Pointer(&d.off(d.Layout.AvailAddr)[0])), true
	}
	return (*uint32)(unsafe.Pointer(&d.off(d.Layout.AvailAddr + 2)[0])), false
}

// SetAvailIdx writes avail.idx verbatim.
func (d *Driver) SetAvailIdx(v uint16) {
	w, aligned := d.availWord()
	if aligned {
		atomic.StoreUint32(w, atomic.LoadUint32(w)&0xffff|uint32(v)<<16)
	} else {
		atomic.StoreUint32(w, atomic.LoadUint32(w)&0xffff0000|uint32(v))
	}
}

// SetNoInterrupt sets or clears VRING_AVAIL_F_NO_INTERRUPT.
func (d *Driver) SetNoInterrupt(on bool) {
	w, aligned := d.availWord()
	if !aligned {
		panic("SetNoInterrupt needs a 4-byte aligned avail ring")
	}
	v := atomic.LoadUint32(w) &^ 1
	if on {
		v |= 1
	}
	atomic.StoreUint32(w, v)
}

// SetUsedEvent writes used_event (EVENT_IDX: interrupt me once used.idx
// passes v).
func (d *Driver) SetUsedEvent(v uint16) {
	binary.LittleEndian.PutUint16(d.off(d.Layout.AvailAddr+4+2*uint64(d.size)), v)
}

// AvailEvent reads avail_event (EVENT_IDX: the device wants a kick once
// avail.idx passes it).
func (d *Driver) AvailEvent() uint16 {
	return binary.LittleEndian.Uint16(d.off(d.Layout.UsedAddr + 4 + 8*uint64(d.size)))
}

// UsedIdx reads used.idx.
func (d *Driver) UsedIdx() uint16 {
	return uint16(atomic.LoadUint32((*uint32)(unsafe.Pointer(&d.off(d.Layout.UsedAddr)[0]))) >> 16)
}

// Collect returns the chains the device completed since the last call and
// frees their descriptors (chains posted through Post only).
func (d *Driver) Collect() []Used {
	var out []Used
	for end := d.UsedIdx(); d.usedSeen != end; d.usedSeen++ {
		e := d.off(d.Layout.UsedAddr + 4 + 8*uint64(d.usedSeen%d.size))
		u := Used{Head: uint16(binary.LittleEndian.Uint32(e[0:])), Len: binary.LittleEndian.Uint32(e[4:])}
		segs, ok := d.chains[u.Head]
		if ok {
			left := int(u.Len)
			for i, s := range segs {
				if s.WriteLen > 0 && left > 0 {
					k := min(left, s.WriteLen)
					gpa := d.chainBufs[u.Head][i]
					u.Written = append(u.Written, d.off(gpa)[:k]...)
					left -= k
				}
			}
			d.release(u.Head, len(segs))
		}
		out = append(out, u)
	}
	return out
}

func (d *Driver) release(head uint16, n int) {
	i := head
	for k := 0; k < n; k++ {
		d.free = append(d.free, i)
		b := d.off(d.Layout.DescAddr + 16*uint64(i))
		i = binary.LittleEndian.Uint16(b[14:])
	}
	delete(d.chains, head)
	delete(d.chainBufs, head)
}

// Queue builds the device side of this driver's queue.
func (d *Driver) Queue() *virtq.Queue {
	q, err := virtq.New(d.Mem, d.Layout, 0)
	if err != nil {
		panic(fmt.Sprintf("virtq.New: %v", err))
	}
	return q
}
