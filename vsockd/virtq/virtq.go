// Package virtq is the device side of a virtio split virtqueue living in
// guest memory: it pops descriptor chains the driver made available, and
// publishes used entries back.
//
// The rings are shared with a guest that may be buggy or hostile. Every index
// read from them is range-checked, every descriptor is copied once and then
// validated, every buffer is resolved through guestmem (one region, in
// bounds) and chains are capped in length and hop count, so nothing a guest
// writes can panic the backend or point it outside guest RAM.
//
// Memory ordering: avail.idx is read with an atomic 32-bit load (acquire)
// before the ring entries it covers, and used.idx is published with an atomic
// 32-bit store (on amd64 an XCHG, a full fence) after the used entries, which
// also orders the later read of avail.flags for interrupt suppression.
package virtq

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/wren-vm/wren/vsockd/guestmem"
)

// Descriptor flags (virtio spec, split ring).
const (
	DescFNext     = 1
	DescFWrite    = 2
	DescFIndirect = 4

	availFNoInterrupt = 1

	descSize = 16
	// MaxSize is the largest queue size the spec allows.
	MaxSize = 32768
)

// ErrBroken means the driver violated the ring protocol in a way that leaves
// no used entry to return (bad avail index or head index); the queue stops
// until the frontend sets it up again.
var ErrBroken = errors.New("virtqueue broken by driver")

// Queue is one split virtqueue. It is not safe for concurrent use; the owner
// serialises all calls.
type Queue struct {
	mem   *guestmem.Memory
	size  uint16
	desc  []byte // size*16 bytes
	avail []byte // 6+2*size bytes
	used  []byte // 6+8*size bytes

	lastAvail uint16
	nextUsed  uint16
	broken    bool

	// EventIdx: VIRTIO_RING_F_EVENT_IDX was negotiated, so interrupts and
	// kicks are suppressed through used_event / avail_event instead of
	// the ring flags.
	EventIdx     bool
	lastSignaled uint16 // used.idx at the previous NeedNotify

	// MaxChainLen caps the total bytes a chain may describe.
	MaxChainLen uint64
}

// Layout gives the guest-physical addresses of the three ring parts.
type Layout struct {
	Size      uint16
	DescAddr  uint64
	AvailAddr uint64
	UsedAddr  uint64
}

// DefaultMaxChainLen is generous for vsock (64 KiB payload plus header).
const DefaultMaxChainLen = 1 << 20

// New resolves the ring parts in mem and starts the queue at lastAvail. The
// device's next used index is taken from used.idx in guest memory, as the
// driver may have restarted the device mid-ring.
func New(mem *guestmem.Memory, l Layout, lastAvail uint16) (*Queue, error) {
	if l.Size == 0 || l.Size&(l.Size-1) != 0 {
		return nil, fmt.Errorf("queue size %d is not a power of two", l.Size)
	}
	q := &Queue{size: l.Size, lastAvail: lastAvail, MaxChainLen: DefaultMaxChainLen}
	if err := q.Remap(mem, l); err != nil {
		return nil, err
	}
	q.nextUsed = binary.LittleEndian.Uint16(q.used[2:])
	q.lastSignaled = q.nextUsed
	return q, nil
}

// Remap re-resolves the rings after the memory table changed.
func (q *Queue) Remap(mem *guestmem.Memory, l Layout) error {
	if l.Size != q.size {
		return fmt.Errorf("queue size changed from %d to %d", q.size, l.Size)
	}
	n := uint64(l.Size)
	desc, err := mem.Slice(l.DescAddr, n*descSize)
	if err != nil {
		return fmt.Errorf("descriptor table: %w", err)
	}
	avail, err := mem.Slice(l.AvailAddr, 6+2*n)
	if err != nil {
		return fmt.Errorf("avail ring: %w", err)
	}
	used, err := mem.Slice(l.UsedAddr, 6+8*n)
	if err != nil {
		return fmt.Errorf("used ring: %w", err)
	}
	// The spec requires 2-byte alignment for avail and 4 for used; we need
	// at least that for the atomic accesses below.
	if addrOf(avail)%2 != 0 || addrOf(used)%4 != 0 || addrOf(desc)%2 != 0 {
		return fmt.Errorf("misaligned rings (desc %#x avail %#x used %#x)", l.DescAddr, l.AvailAddr, l.UsedAddr)
	}
	q.mem, q.desc, q.avail, q.used = mem, desc, avail, used
	return nil
}

func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

// LastAvail is the index of the next avail entry the device will consume
// (what GET_VRING_BASE reports).
func (q *Queue) LastAvail() uint16 { return q.lastAvail }

// Size is the queue size.
func (q *Queue) Size() uint16 { return q.size }

// Broken reports whether the driver broke the ring protocol.
func (q *Queue) Broken() bool { return q.broken }

// availIdx loads avail.idx with acquire semantics.
func (q *Queue) availIdx() uint16 {
	if addrOf(q.avail)%4 == 0 {
		w := atomic.LoadUint32((*uint32)(unsafe.Pointer(&q.avail[0])))
		return uint16(w >> 16) // little-endian: idx is the high half
	}
	// avail ≡ 2 (mod 4): idx itself starts a 4-aligned word (idx, ring[0]).
	w := atomic.LoadUint32((*uint32)(unsafe.Pointer(&q.avail[2])))
	return uint16(w)
}

// Pending reports whether the driver has made chains available that the
// device has not consumed.
func (q *Queue) Pending() bool {
	return !q.broken && q.availIdx() != q.lastAvail
}

// Pop takes the next available chain head. ok is false when the ring is
// empty. A non-nil error means the ring is broken.
func (q *Queue) Pop() (head uint16, ok bool, err error) {
	if q.broken {
		return 0, false, ErrBroken
	}
	idx := q.availIdx()
	if idx == q.lastAvail {
		return 0, false, nil
	}
	if uint16(idx-q.lastAvail) > q.size {
		q.broken = true
		return 0, false, fmt.Errorf("%w: avail idx %d is more than %d ahead of %d", ErrBroken, idx, q.size, q.lastAvail)
	}
	slot := uint64(q.lastAvail % q.size)
	head = binary.LittleEndian.Uint16(q.avail[4+2*slot:])
	if head >= q.size {
		q.broken = true
		return 0, false, fmt.Errorf("%w: head %d out of range (size %d)", ErrBroken, head, q.size)
	}
	q.lastAvail++
	return head, true, nil
}

// Chain is a validated descriptor chain: its device-readable buffers followed
// by its device-writable buffers, each a slice of guest memory.
type Chain struct {
	Head     uint16
	Readable [][]byte
	Writable [][]byte
	ReadLen  uint64
	WriteLen uint64
}

// Walk validates and resolves the chain starting at head.
func (q *Queue) Walk(head uint16) (Chain, error) {
	return WalkChain(q.mem, q.desc, q.size, head, q.MaxChainLen)
}

// WalkChain walks a descriptor chain in table (size entries). It rejects
// out-of-range next indices, loops (more hops than entries), indirect
// descriptors (not negotiated), readable-after-writable ordering, buffers
// outside guest memory and chains longer than maxLen bytes.
func WalkChain(mem *guestmem.Memory, table []byte, size, head uint16, maxLen uint64) (Chain, error) {
	c := Chain{Head: head}
	if uint64(len(table)) < uint64(size)*descSize {
		return c, fmt.Errorf("descriptor table of %d bytes for size %d", len(table), size)
	}
	idx := head
	for hops := 0; ; hops++ {
		if idx >= size {
			return c, fmt.Errorf("descriptor index %d out of range (size %d)", idx, size)
		}
		if hops >= int(size) {
			return c, fmt.Errorf("descriptor chain from %d loops (more than %d hops)", head, size)
		}
		// Copy the descriptor out once; the guest may rewrite it under us.
		raw := table[uint64(idx)*descSize:][:descSize]
		addr := binary.LittleEndian.Uint64(raw[0:])
		length := binary.LittleEndian.Uint32(raw[8:])
		flags := binary.LittleEndian.Uint16(raw[12:])
		next := binary.LittleEndian.Uint16(raw[14:])

		if flags&DescFIndirect != 0 {
			return c, fmt.Errorf("descriptor %d: indirect descriptors not negotiated", idx)
		}
		if c.ReadLen+c.WriteLen+uint64(length) > maxLen {
			return c, fmt.Errorf("descriptor chain from %d longer than %d bytes", head, maxLen)
		}
		if length > 0 {
			buf, err := mem.Slice(addr, uint64(length))
			if err != nil {
				return c, fmt.Errorf("descriptor %d: %w", idx, err)
			}
			if flags&DescFWrite != 0 {
				c.Writable = append(c.Writable, buf)
				c.WriteLen += uint64(length)
			} else {
				if len(c.Writable) > 0 {
					return c, fmt.Errorf("descriptor %d: readable after writable", idx)
				}
				c.Readable = append(c.Readable, buf)
				c.ReadLen += uint64(length)
			}
		}
		if flags&DescFNext == 0 {
			return c, nil
		}
		idx = next
	}
}

// Push returns a chain to the driver with n bytes written into it.
func (q *Queue) Push(head uint16, n uint32) {
	slot := uint64(q.nextUsed % q.size)
	e := q.used[4+8*slot:]
	binary.LittleEndian.PutUint32(e[0:], uint32(head))
	binary.LittleEndian.PutUint32(e[4:], n)
	q.nextUsed++
	// Release: the entry above is visible before the new idx. used.flags
	// (low half) is device-owned and we never suppress notifications.
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&q.used[0])), uint32(q.nextUsed)<<16)
}

// NeedNotify reports whether the driver wants an interrupt for the used
// entries published since the previous call. It reads the driver's
// suppression state after Push's full fence.
func (q *Queue) NeedNotify() bool {
	if q.EventIdx {
		// used_event follows the avail ring; interrupt when used.idx
		// moved past it since the last signal (vring_need_event).
		usedEvent := binary.LittleEndian.Uint16(q.avail[4+2*uint64(q.size):])
		newIdx, old := q.nextUsed, q.lastSignaled
		q.lastSignaled = newIdx
		return newIdx-usedEvent-1 < newIdx-old
	}
	var flags uint16
	if addrOf(q.avail)%4 == 0 {
		flags = uint16(atomic.LoadUint32((*uint32)(unsafe.Pointer(&q.avail[0]))))
	} else {
		flags = binary.LittleEndian.Uint16(q.avail[0:])
	}
	return flags&availFNoInterrupt == 0
}

// EnableKicks asks the driver to kick for the next chain it makes available
// and reports whether chains arrived meanwhile (then the caller must keep
// popping: the driver may have skipped its kick). Call it when Pop finds
// the ring empty and the device wants more. Without EVENT_IDX the driver
// always kicks (the device never sets VRING_USED_F_NO_NOTIFY).
func (q *Queue) EnableKicks() bool {
	if !q.EventIdx {
		return false
	}
	// avail_event sits right after the used ring (2 bytes, device-owned).
	binary.LittleEndian.PutUint16(q.used[4+8*uint64(q.size):], q.lastAvail)
	// Full fence between that store and re-reading avail.idx: re-store the
	// device-owned used header with an XCHG.
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&q.used[0])), uint32(q.nextUsed)<<16)
	return q.Pending()
}
