package guestmem

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSliceBounds(t *testing.T) {
	a := make([]byte, 4096)
	b := make([]byte, 4096)
	m, err := New([]Region{
		{GuestPhysAddr: 0x1000, UserAddr: 0x7000_0000, Data: a},
		{GuestPhysAddr: 0x3000, UserAddr: 0x7100_0000, Data: b},
	})
	if err != nil {
		t.Fatal(err)
	}
	ok := []struct{ gpa, n uint64 }{
		{0x1000, 4096}, {0x1fff, 1}, {0x3000, 1}, {0x3ff0, 16}, {0x1800, 0},
	}
	for _, c := range ok {
		s, err := m.Slice(c.gpa, c.n)
		if err != nil || uint64(len(s)) != c.n {
			t.Errorf("Slice(%#x, %d) = %d bytes, %v", c.gpa, c.n, len(s), err)
		}
	}
	bad := []struct{ gpa, n uint64 }{
		{0, 1}, {0xfff, 2}, {0x1fff, 2}, // straddles the end of region a
		{0x2000, 1}, {0x2fff, 2}, // the hole, and into region b
		{0x1f00, 0x1200},            // a into hole into b
		{0x4000, 1},                 // past the end
		{^uint64(0), 2},             // wraps
		{0x1000, ^uint64(0)},        // huge length
		{0x3001, ^uint64(0) - 0x10}, // length that would wrap offset+n
	}
	for _, c := range bad {
		if _, err := m.Slice(c.gpa, c.n); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("Slice(%#x, %#x) = %v, want ErrOutOfRange", c.gpa, c.n, err)
		}
	}
	// Writes through a slice land in the region, and a slice cannot be
	// extended past what was asked (full slice expression).
	s, _ := m.Slice(0x3010, 4)
	copy(s, "abcd")
	if string(b[0x10:0x14]) != "abcd" || cap(s) != 4 {
		t.Fatalf("slice not backed by region or capacity %d", cap(s))
	}
	if gpa, err := m.UserToGuest(0x7100_0010); err != nil || gpa != 0x3010 {
		t.Fatalf("UserToGuest = %#x %v", gpa, err)
	}
	if _, err := m.UserToGuest(0x7000_1000); err == nil {
		t.Fatal("UserToGuest accepted an address past region a")
	}
}

func TestNewRejectsOverlap(t *testing.T) {
	_, err := New([]Region{
		{GuestPhysAddr: 0x1000, Data: make([]byte, 0x1000)},
		{GuestPhysAddr: 0x1800, Data: make([]byte, 0x1000)},
	})
	if err == nil {
		t.Fatal("overlapping regions accepted")
	}
	if _, err := New([]Region{{GuestPhysAddr: ^uint64(0) - 10, Data: make([]byte, 100)}}); err == nil {
		t.Fatal("wrapping region accepted")
	}
}

// Map shares memory with the memfd, as QEMU's guest RAM does, honouring an
// unaligned mmap offset.
func TestMapMemfd(t *testing.T) {
	fd, err := unix.MemfdCreate("guestmem-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "memfd")
	defer f.Close()
	if err := f.Truncate(3 * 4096); err != nil {
		t.Fatal(err)
	}
	m, err := Map([]MapRegion{{GuestPhysAddr: 0x10000, Size: 4096, UserAddr: 0x5000, MmapOffset: 4096 + 100, File: f}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.Slice(0x10000, 4)
	if err != nil {
		t.Fatal(err)
	}
	copy(s, "wren")
	got := make([]byte, 4)
	if _, err := f.ReadAt(got, 4096+100); err != nil || string(got) != "wren" {
		t.Fatalf("memfd holds %q (%v)", got, err)
	}
	m.Close()
	if _, err := Map([]MapRegion{{GuestPhysAddr: 0, Size: 0, File: f}}); err == nil {
		t.Fatal("zero-size region accepted")
	}
	// A region past the end of the file would SIGBUS on first touch.
	if _, err := Map([]MapRegion{{GuestPhysAddr: 0, Size: 3 * 4096, MmapOffset: 4096, File: f}}); err == nil {
		t.Fatal("region beyond the end of the memfd accepted")
	}
	if _, err := Map([]MapRegion{{GuestPhysAddr: 0, Size: 4096, MmapOffset: 1 << 40, File: f}}); err == nil {
		t.Fatal("offset beyond the end of the memfd accepted")
	}
}
