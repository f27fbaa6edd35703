package vm

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// A template machine is the pod VM without its vhost-user devices, with
// RAM in a shared file, the clone's root ports and a vmgenid device.
func TestTemplateArgs(t *testing.T) {
	dir := t.TempDir()
	c := &Config{Dir: dir, Kernel: "/k", Initrd: "/i", MemoryMiB: 256, CPUs: 1}
	args, err := templateArgs(c, "tcg", "/mem/file", "console=ttyS0 fixed")
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(args, " ")
	for _, want := range []string{
		"memory-backend-file,id=ram,size=256M,mem-path=/mem/file,share=on",
		"-append console=ttyS0 fixed -",
		"pcie-root-port,id=hp0,bus=pcie.0,chassis=1,addr=0x10",
		"pcie-root-port,id=hp-vsock,bus=pcie.0,chassis=5,addr=0x14",
		"pcie-root-port,id=hp-fs,bus=pcie.0,chassis=6,addr=0x15",
		"-device vmgenid,guid=auto",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("template args lack %q:\n%s", want, joined)
		}
	}
	for _, not := range []string{"vhost-user", "socket,id=vsock", "socket,id=virtiofs", "memory-backend-memfd"} {
		if strings.Contains(joined, not) {
			t.Errorf("template args have %q:\n%s", not, joined)
		}
	}
}

// The memory copy holds exactly the source's content, leaves zero pages
// and holes as holes, and its digest changes with any byte.
func TestDigestMemory(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "mem")
	const size = 64 << 20
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	// Data at 1 MiB (with a zero page inside the extent), at 40 MiB and in
	// the last, partial run up to the end.
	page := bytes.Repeat([]byte{0xa5}, memPage)
	for _, off := range []int64{1 << 20, 1<<20 + 2*memPage, 40 << 20, size - memPage} {
		if _, err := f.WriteAt(page, off); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.WriteAt(make([]byte, memPage), 1<<20+memPage); err != nil { // a written zero page
		t.Fatal(err)
	}
	f.Close()

	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(filepath.Join(dir, "copy"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	d, err := digestMemory(in, out)
	if err != nil {
		t.Fatal(err)
	}
	if d.Size != size || d.Pages != 4 {
		t.Errorf("digest %+v: want size %d and 4 non-zero pages", d, size)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(out.Name())
	if !bytes.Equal(a, b) {
		t.Fatal("the copy differs from the source")
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(out.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > 4*memPage*2 {
		t.Errorf("the copy allocates %d bytes for 4 non-zero pages", st.Blocks*512)
	}
	// One changed byte, even in a hole, changes the digest.
	for _, off := range []int64{1<<20 + 7, 20 << 20} {
		g, err := os.OpenFile(src, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.WriteAt([]byte{1}, off); err != nil {
			t.Fatal(err)
		}
		g.Close()
		in2, _ := os.Open(src)
		d2, err := digestMemory(in2, nil)
		in2.Close()
		if err != nil {
			t.Fatal(err)
		}
		if d2.SHA256 == d.SHA256 {
			t.Errorf("a byte changed at %#x leaves the digest as it was", off)
		}
		d = d2
	}
}
