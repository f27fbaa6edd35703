package virtq_test

import (
	"encoding/binary"
	"testing"
	"unsafe"

	"github.com/wren-vm/wren/vsockd/guestmem"
	"github.com/wren-vm/wren/vsockd/virtq"
)

// FuzzWalkChain feeds arbitrary descriptor tables to the chain walker: it
// must never panic, and every buffer of an accepted chain must lie inside
// guest RAM, within the length cap, readable before writable.
func FuzzWalkChain(f *testing.F) {
	desc := func(addr uint64, n uint32, flags, next uint16) []byte {
		b := make([]byte, 16)
		binary.LittleEndian.PutUint64(b[0:], addr)
		binary.LittleEndian.PutUint32(b[8:], n)
		binary.LittleEndian.PutUint16(b[12:], flags)
		binary.LittleEndian.PutUint16(b[14:], next)
		return b
	}
	cat := func(bs ...[]byte) []byte {
		var out []byte
		for _, b := range bs {
			out = append(out, b...)
		}
		return out
	}
	const base = 0x1000
	f.Add(cat(desc(base, 44, virtq.DescFNext, 1), desc(base+64, 100, 0, 0)), uint16(0))
	f.Add(cat(desc(base, 44, virtq.DescFNext|virtq.DescFWrite, 1), desc(base+64, 4096, virtq.DescFWrite, 0)), uint16(0))
	f.Add(cat(desc(base, 8, virtq.DescFNext, 1), desc(base, 8, virtq.DescFNext, 0)), uint16(1))
	f.Add(cat(desc(0xffffffffffffff00, 0x200, 0, 0)), uint16(0))
	f.Add(cat(desc(base, 16, virtq.DescFIndirect, 0)), uint16(0))
	f.Add(cat(desc(base, 8, virtq.DescFNext, 9)), uint16(0))
	f.Fuzz(func(t *testing.T, table []byte, head uint16) {
		ram := make([]byte, 8192)
		mem, err := guestmem.New([]guestmem.Region{{GuestPhysAddr: base, UserAddr: 0, Data: ram}})
		if err != nil {
			t.Fatal(err)
		}
		size := uint16(1)
		for uint64(size)*2*16 <= uint64(len(table)) && size < 1024 {
			size *= 2
		}
		const maxLen = 1 << 16
		c, err := virtq.WalkChain(mem, table, size, head, maxLen)
		if err != nil {
			return
		}
		lo := uintptr(unsafe.Pointer(&ram[0]))
		hi := lo + uintptr(len(ram))
		var total uint64
		for _, set := range [][][]byte{c.Readable, c.Writable} {
			for _, b := range set {
				p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
				if p < lo || p+uintptr(len(b)) > hi {
					t.Fatalf("buffer [%#x,+%d) outside RAM [%#x,%#x)", p, len(b), lo, hi)
				}
				total += uint64(len(b))
			}
		}
		if total > maxLen || total != c.ReadLen+c.WriteLen {
			t.Fatalf("chain length %d (read %d write %d)", total, c.ReadLen, c.WriteLen)
		}
	})
}
