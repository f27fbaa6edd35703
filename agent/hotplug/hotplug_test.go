package hotplug

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/wren-vm/wren/agent/errdefs"
)

func TestMemBlockSizeOfThisMachine(t *testing.T) {
	s := New("")
	size, err := s.MemBlockSize()
	if _, statErr := os.Stat("/sys/devices/system/memory/block_size_bytes"); statErr != nil {
		t.Skip("no memory hotplug sysfs")
	}
	if err != nil || size == 0 || size&(size-1) != 0 {
		t.Fatalf("block size %d (%v), want a power of two", size, err)
	}
}

// Onlining real CPUs and memory needs hotplug in a VM (tested in the VM
// suite); here a directory stands in for /sys/devices/system so the
// selection logic is exercised without offlining the test machine.
func fakeSystem(t *testing.T) (*System, string) {
	t.Helper()
	sys := t.TempDir()
	write := func(rel, v string) { writeFile(t, filepath.Join(sys, "devices/system", rel), v, 0o644) }
	write("cpu/cpu0/online", "1\n")
	write("cpu/cpu1/online", "0\n")
	write("cpu/cpu2/online", "0\n")
	write("cpu/cpu3/online", "0\n")
	write("memory/memory0/online", "1\n")
	write("memory/memory7/online", "0\n")
	write("memory/block_size_bytes", "8000000\n")
	return New(sys), sys
}

// writeFile writes v to p, creating p's directory; a failure fails the
// test.
func writeFile(t *testing.T, p, v string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(v), mode); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, sys, rel string) string {
	b, _ := os.ReadFile(filepath.Join(sys, "devices/system", rel))
	return string(b)
}

func TestOnlineCPUsAndMemory(t *testing.T) {
	s, sys := fakeSystem(t)
	n, err := s.OnlineCPUs(context.Background(), 2)
	if err != nil || n != 2 {
		t.Fatalf("onlined %d, %v", n, err)
	}
	if read(t, sys, "cpu/cpu1/online") != "1" || read(t, sys, "cpu/cpu2/online") != "1" || read(t, sys, "cpu/cpu3/online") != "0\n" {
		t.Fatal("wrong CPUs onlined")
	}
	if n, err := s.OnlineMemory(); err != nil || n != 1 || read(t, sys, "memory/memory7/online") != "1" {
		t.Fatalf("memory: %d %v", n, err)
	}
	if size, _ := s.MemBlockSize(); size != 128<<20 {
		t.Fatalf("block size %d", size)
	}
	// More CPUs than will ever appear: gives up, saying how far it got.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n, err := s.OnlineCPUs(ctx, 5); n != 1 || !errors.Is(err, context.Canceled) {
		t.Fatalf("got %d %v", n, err)
	}
}

func TestProbe(t *testing.T) {
	s, sys := fakeSystem(t)
	if err := s.Probe([]uint64{0x100000000}); errdefs.KindOf(err) != errdefs.ErrFailedPrecondition {
		t.Fatalf("no probe file: %v", err)
	}
	writeFile(t, filepath.Join(sys, "devices/system/memory/probe"), "", 0o200)
	if err := s.Probe([]uint64{0x100000000}); err != nil {
		t.Fatal(err)
	}
	if got := read(t, sys, "memory/probe"); got != "0x100000000" {
		t.Fatalf("probe got %q", got)
	}
}
