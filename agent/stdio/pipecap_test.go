package stdio

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestPipeCapacity(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := unix.FcntlInt(w.Fd(), unix.F_SETPIPE_SZ, 128<<10); err != nil {
		t.Fatal(err)
	}
	if got := pipeCapacity(r); got != 128<<10 {
		t.Errorf("pipeCapacity = %d, want %d", got, 128<<10)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "plain"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := pipeCapacity(f); got != 0 {
		t.Errorf("pipeCapacity of a regular file = %d, want 0", got)
	}
}

// A read that finds the pipe full and asks for more than it holds grows
// the pipe to the read's size; reads that find room left, or ask for no
// more than the pipe holds, leave it alone.
func TestFullPipeGrowsToTheReadSize(t *testing.T) {
	s, w := pipesForTest(t, 64<<10)
	capacity := func() int { return pipeCapacity(s.stdout) }

	// Not full: no growth.
	if _, err := w.Write(make([]byte, 10<<10)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(context.Background(), Stdout, MaxRead); err != nil {
		t.Fatal(err)
	}
	if c := capacity(); c != 64<<10 {
		t.Fatalf("capacity %d after reading a pipe with room left, want 64 KiB", c)
	}
	// Full, and a read of no more than it holds: no growth.
	if _, err := w.Write(make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	if b, err := s.Read(context.Background(), Stdout, 32<<10); err != nil || len(b) != 32<<10 {
		t.Fatalf("read %d bytes, %v", len(b), err)
	}
	if c := capacity(); c != 64<<10 {
		t.Fatalf("capacity %d after a 32 KiB read, want 64 KiB", c)
	}
	if _, err := s.Read(context.Background(), Stdout, MaxRead); err != nil {
		t.Fatal(err)
	}
	// Full, and a read asking for 300 KiB: the pipe grows to 512 KiB.
	if _, err := w.Write(make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	if b, err := s.Read(context.Background(), Stdout, 300<<10); err != nil || len(b) != 64<<10 {
		t.Fatalf("read %d bytes, %v", len(b), err)
	}
	if c := capacity(); c != 512<<10 || s.outCap != c {
		t.Fatalf("capacity %d (recorded %d) after a 300 KiB read of a full pipe, want 512 KiB", c, s.outCap)
	}
	// It now carries a 512 KiB reply.
	want := bytes.Repeat([]byte("x"), 512<<10)
	if _, err := w.Write(want); err != nil {
		t.Fatal(err)
	}
	if b, err := s.Read(context.Background(), Stdout, MaxRead); err != nil || !bytes.Equal(b, want) {
		t.Fatalf("read %d bytes after growing, %v; want all 512 KiB", len(b), err)
	}
}
