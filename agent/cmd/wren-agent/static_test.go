package main

import (
	"debug/elf"
	"testing"

	"github.com/wren-vm/wren/harness/testagent"
)

// The agent is /init of an initramfs with no libc and no dynamic loader:
// the binary must have no interpreter and need no shared library.
func TestAgentBinaryIsStatic(t *testing.T) {
	f, err := elf.Open(testagent.Binary(t, "wren-agent"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("wren-agent has a PT_INTERP header: it is dynamically linked")
		}
		if p.Type == elf.PT_DYNAMIC {
			t.Error("wren-agent has a PT_DYNAMIC header")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) > 0 {
		t.Fatalf("wren-agent needs shared libraries: %v", libs)
	}
}

func TestSinceProcessStart(t *testing.T) {
	d, err := sinceProcessStart()
	if err != nil {
		t.Fatal(err)
	}
	if d < 0 {
		t.Fatalf("process started in the future: %v", d)
	}
}
