package cpio

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/wren-vm/wren/internal/testroot"
)

func sampleArchive(t *testing.T) *Archive {
	t.Helper()
	src := filepath.Join(t.TempDir(), "host-file")
	if err := os.WriteFile(src, []byte("from the host\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := NewArchive()
	a.MTime = 1700000000
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.File("/init", 0o755, []byte("#!/bin/sh\necho hi\n")))
	must(a.HostFile("etc/from-host", 0o644, src))
	must(a.Dir("/tmp", 0o1777))
	must(a.Symlink("/bin/sh", "busybox"))
	must(a.CharDev("/dev/console", 0o600, 5, 1))
	must(a.Add("/dev/vda", Entry{Type: TypeBlockDev, Perm: 0o660, GID: 6, Major: 254, Minor: 0}))
	must(a.Add("/usr/bin/suid", Entry{Type: TypeFile, Perm: 0o4755, UID: 1000, GID: 1000, Data: []byte("x")}))
	must(a.File("/empty", 0o644, nil))
	return a
}

func writeArchive(t *testing.T, a *Archive) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := a.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteTo reported %d bytes, wrote %d", n, buf.Len())
	}
	return buf.Bytes()
}

func TestArchiveReproducible(t *testing.T) {
	first := writeArchive(t, sampleArchive(t))
	second := writeArchive(t, sampleArchive(t))
	if !bytes.Equal(first, second) {
		t.Fatal("two archives from the same inputs differ")
	}
	if len(first)%4 != 0 {
		t.Fatalf("archive length %d not 4-byte aligned", len(first))
	}
}

func TestArchiveRoundTrip(t *testing.T) {
	data := writeArchive(t, sampleArchive(t))
	r := NewReader(bytes.NewReader(data))
	var names []string
	got := map[string]*Header{}
	contents := map[string]string{}
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		got[h.Name] = h
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		contents[h.Name] = string(b)
	}
	want := []string{"bin", "bin/sh", "dev", "dev/console", "dev/vda", "empty", "etc", "etc/from-host", "init", "tmp", "usr", "usr/bin", "usr/bin/suid"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("names = %v, want %v", names, want)
	}
	for i, n := range names {
		if got[n].Ino != uint32(i+1) {
			t.Errorf("%s: ino %d, want %d", n, got[n].Ino, i+1)
		}
		if got[n].MTime != 1700000000 {
			t.Errorf("%s: mtime %d", n, got[n].MTime)
		}
	}
	if h := got["dev/console"]; h.Type != TypeCharDev || h.Major != 5 || h.Minor != 1 || h.Perm != 0o600 {
		t.Errorf("console = %+v", h)
	}
	if h := got["usr/bin/suid"]; h.Perm != 0o4755 || h.UID != 1000 || h.GID != 1000 {
		t.Errorf("suid = %+v", h)
	}
	if h := got["bin"]; h.Type != TypeDir || h.Perm != 0o755 || h.UID != 0 {
		t.Errorf("implicit dir bin = %+v", h)
	}
	if contents["bin/sh"] != "busybox" || contents["etc/from-host"] != "from the host\n" || contents["empty"] != "" {
		t.Errorf("contents = %q", contents)
	}
}

// TestExtractWithGNUCpio checks the archive against an independent reader:
// GNU cpio lists and extracts it with the modes, owners and device numbers
// we asked for.
func TestExtractWithGNUCpio(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed (apt-get install cpio)")
	}
	data := writeArchive(t, sampleArchive(t))

	list := exec.Command("cpio", "-t", "--quiet")
	list.Stdin = bytes.NewReader(data)
	out, err := list.Output()
	if err != nil {
		t.Fatalf("cpio -t: %v", err)
	}
	if !strings.Contains(string(out), "dev/console\n") || !strings.Contains(string(out), "usr/bin/suid\n") {
		t.Fatalf("cpio -t listing:\n%s", out)
	}
	testroot.Require(t, "extracting device nodes and owners")
	dir := t.TempDir()
	ex := exec.Command("cpio", "-i", "--quiet", "-d", "-m", "--no-absolute-filenames")
	ex.Dir = dir
	ex.Stdin = bytes.NewReader(data)
	if out, err := ex.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	stat := func(name string) *syscall.Stat_t {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(dir, name), &st); err != nil {
			t.Fatal(err)
		}
		return &st
	}
	if st := stat("dev/console"); st.Mode != syscall.S_IFCHR|0o600 || st.Rdev != 5<<8|1 {
		t.Errorf("dev/console mode %#o rdev %#x", st.Mode, st.Rdev)
	}
	if st := stat("dev/vda"); st.Mode&syscall.S_IFMT != syscall.S_IFBLK || st.Gid != 6 || st.Rdev>>8 != 254 {
		t.Errorf("dev/vda mode %#o gid %d rdev %#x", st.Mode, st.Gid, st.Rdev)
	}
	if st := stat("usr/bin/suid"); st.Mode != syscall.S_IFREG|0o4755 || st.Uid != 1000 {
		t.Errorf("suid mode %#o uid %d", st.Mode, st.Uid)
	}
	if st := stat("tmp"); st.Mode != syscall.S_IFDIR|0o1777 {
		t.Errorf("tmp mode %#o", st.Mode)
	}
	if st := stat("init"); st.Mtim.Sec != 1700000000 || st.Mode != syscall.S_IFREG|0o755 {
		t.Errorf("init mtime %d mode %#o", st.Mtim.Sec, st.Mode)
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || target != "busybox" {
		t.Errorf("bin/sh -> %q, %v", target, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "etc/from-host")); err != nil || string(b) != "from the host\n" {
		t.Errorf("etc/from-host = %q, %v", b, err)
	}
}

func TestArchiveRejects(t *testing.T) {
	a := NewArchive()
	if err := a.File("/x", 0o644, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if err := a.File("x", 0o644, []byte("b")); err == nil {
		t.Error("duplicate file accepted")
	}
	if err := a.Dir("/d", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := a.Dir("/d", 0o755); err != nil {
		t.Errorf("identical directory rejected: %v", err)
	}
	if err := a.Dir("/d", 0o700); err == nil {
		t.Error("conflicting directory accepted")
	}
	for _, bad := range []string{"", "/", ".", "a\x00b"} {
		if err := a.File(bad, 0o644, nil); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	if err := a.Symlink("/l", ""); err == nil {
		t.Error("empty symlink target accepted")
	}
	if err := a.Add("/h", Entry{Type: TypeFile, Data: []byte{}, Source: "/etc/passwd"}); err == nil {
		t.Error("Data and Source both accepted")
	}
	if err := a.Add("/weird", Entry{Type: 0o170000}); err == nil {
		t.Error("unknown type accepted")
	}
	// ".." is cleaned away rather than escaping the root.
	if n, err := CleanName("/../../etc/x"); err != nil || n != "etc/x" {
		t.Errorf("CleanName = %q, %v", n, err)
	}
}

func TestArchiveMissingSource(t *testing.T) {
	a := NewArchive()
	if err := a.HostFile("/f", 0o644, "/nonexistent/wren-test"); err != nil {
		t.Fatal(err)
	}
	_, err := a.WriteTo(io.Discard)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "/f") {
		t.Fatalf("err = %v, want not-exist naming /f", err)
	}
}

func TestWriterLengthChecks(t *testing.T) {
	w := NewWriter(io.Discard)
	if err := w.WriteHeader(&Header{Name: "f", Type: TypeFile, Size: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("abc")); !errors.Is(err, ErrWriteTooLong) {
		t.Errorf("overlong write: %v", err)
	}
	w = NewWriter(io.Discard)
	_ = w.WriteHeader(&Header{Name: "f", Type: TypeFile, Size: 2})
	if err := w.Close(); err == nil {
		t.Error("short record accepted")
	}
	if err := NewWriter(io.Discard).WriteHeader(&Header{Name: "d", Type: TypeDir, Size: 1}); err == nil {
		t.Error("directory with data accepted")
	}
}

func TestReaderErrors(t *testing.T) {
	data := writeArchive(t, sampleArchive(t))
	for _, cut := range []int{3, 50, 115, 200, len(data) - 200} {
		r := NewReader(bytes.NewReader(data[:cut]))
		var err error
		for err == nil {
			_, err = r.Next()
		}
		if err == io.EOF {
			t.Errorf("archive cut at %d read as complete", cut)
		}
	}
	bad := append([]byte("070702"), data[6:]...)
	if _, err := NewReader(bytes.NewReader(bad)).Next(); err == nil || !strings.Contains(err.Error(), "magic") {
		t.Errorf("bad magic: %v", err)
	}
}

func FuzzReader(f *testing.F) {
	a := NewArchive()
	_ = a.File("/a", 0o644, []byte("hello"))
	_ = a.Symlink("/b", "a")
	var buf bytes.Buffer
	_, _ = a.WriteTo(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte("070701"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		for i := 0; i < 1000; i++ {
			if _, err := r.Next(); err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, r); err != nil {
				return
			}
		}
	})
}
