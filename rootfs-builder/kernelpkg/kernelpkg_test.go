package kernelpkg

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func fetchDefault(t *testing.T) *Kernel {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k, err := Fetch(ctx, Options{})
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	return k
}

// hasPVHNote reports whether the ELF kernel carries the Xen PVH entry
// note (XEN_ELFNOTE_PHYS32_ENTRY = 18) that QEMU needs to boot it directly.
func hasPVHNote(t *testing.T, path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			t.Fatal(err)
		}
		for len(b) >= 12 {
			nsz, dsz, typ := binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]), binary.LittleEndian.Uint32(b[8:])
			name := b[12:min(len(b), 12+int(nsz))]
			if typ == 18 && bytes.HasPrefix(name, []byte("Xen")) {
				return true
			}
			adv := 12 + int((nsz+3)&^3) + int((dsz+3)&^3)
			if adv > len(b) {
				break
			}
			b = b[adv:]
		}
	}
	return false
}

func TestFetchDefault(t *testing.T) {
	k := fetchDefault(t)
	if !strings.HasPrefix(k.Package, "linux-image-") || !strings.HasSuffix(k.Version, "-amd64") {
		t.Errorf("kernel = %+v", k)
	}
	f, err := elf.Open(k.Vmlinux)
	if err != nil {
		t.Fatalf("vmlinux: %v", err)
	}
	if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		t.Errorf("vmlinux machine %v type %v", f.Machine, f.Type)
	}
	f.Close()
	if !hasPVHNote(t, k.Vmlinux) {
		t.Error("vmlinux has no PVH entry note; QEMU could not boot it directly")
	}
	if _, err := os.Stat(filepath.Join(k.ModulesDir, "kernel", "net", "vmw_vsock", "vsock.ko")); err != nil {
		t.Errorf("modules: %v", err)
	}
	// A second call returns the cached kernel.
	again := fetchDefault(t)
	if *again != *k {
		t.Errorf("second Fetch = %+v, want %+v", again, k)
	}
}

type lineCounter struct {
	mu    sync.Mutex
	lines []string
}

func (c *lineCounter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, strings.Split(strings.TrimSpace(string(p)), "\n")...)
	return len(p), nil
}

// TestFetchConcurrent fetches into an empty cache from two goroutines (each
// with its own lock file descriptor, as two test processes would have),
// resolving the package from apt: exactly one downloads, both get the same
// complete kernel.
func TestFetchConcurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("downloads the kernel package (70 MB)")
	}
	pkg := fetchDefault(t).Package // resolves the name, warms apt
	dir := t.TempDir()
	var prog lineCounter
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	results := make([]*Kernel, 2)
	errs := make([]error, 2)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = Fetch(ctx, Options{Dir: dir, Progress: &prog})
		}()
	}
	wg.Wait()
	for i := range errs {
		if errs[i] != nil {
			t.Fatalf("Fetch %d: %v", i, errs[i])
		}
	}
	if results[0].Package != pkg {
		t.Errorf("resolved %s, want %s", results[0].Package, pkg)
	}
	if *results[0] != *results[1] {
		t.Errorf("results differ: %+v vs %+v", results[0], results[1])
	}
	downloads := 0
	for _, l := range prog.lines {
		if strings.Contains(l, "apt-get download") {
			downloads++
		}
	}
	if downloads != 1 {
		t.Errorf("%d downloads, want 1; progress:\n%s", downloads, strings.Join(prog.lines, "\n"))
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".fetch-*"))
	if len(left) != 0 {
		t.Errorf("scratch directories left behind: %v", left)
	}
}

func TestFetchRejectsBadPackage(t *testing.T) {
	_, err := Fetch(context.Background(), Options{Dir: t.TempDir(), Package: "coreutils; rm -rf /"})
	if err == nil || !strings.Contains(err.Error(), "not a linux-image package") {
		t.Fatalf("err = %v", err)
	}
}

func TestCacheDirFromEnv(t *testing.T) {
	t.Setenv("WREN_KERNEL_DIR", "/tmp/wren-kernel-x")
	if d := CacheDir(Options{}); d != "/tmp/wren-kernel-x" {
		t.Errorf("CacheDir = %q", d)
	}
	if d := CacheDir(Options{Dir: "/a"}); d != "/a" {
		t.Errorf("CacheDir = %q", d)
	}
	t.Setenv("WREN_KERNEL_DIR", "")
	if d := CacheDir(Options{}); d != DefaultDir {
		t.Errorf("CacheDir = %q", d)
	}
}

func TestPayload(t *testing.T) {
	k := fetchDefault(t)
	bz, err := os.ReadFile(k.BzImage)
	if err != nil {
		t.Fatal(err)
	}
	p, comp, err := Payload(bz)
	if err != nil {
		t.Fatal(err)
	}
	if comp != "xz" || len(p) < 1<<20 {
		t.Errorf("payload %s, %d bytes", comp, len(p))
	}
	if _, _, err := Payload(make([]byte, 4096)); !errors.Is(err, ErrNotBzImage) {
		t.Errorf("zero image: %v", err)
	}
	// A header whose payload runs past the end of the file.
	bad := append([]byte(nil), bz[:8192]...)
	if _, _, err := Payload(bad); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Errorf("truncated image: %v", err)
	}
}

// TestExtractGzipPayload builds a bzImage-shaped file around a gzip payload
// (as kernels built with CONFIG_KERNEL_GZIP have) and extracts it.
func TestExtractGzipPayload(t *testing.T) {
	elfBytes := append([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1}, make([]byte, 100)...)
	var gz bytes.Buffer
	zw := newGzip(&gz)
	if _, err := zw.Write(elfBytes); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	img := make([]byte, 5*512)
	img[offSetupSects] = 4
	copy(img[offHeaderMagic:], "HdrS")
	binary.LittleEndian.PutUint16(img[offVersion:], 0x20f)
	binary.LittleEndian.PutUint32(img[offPayloadOffset:], 16)
	binary.LittleEndian.PutUint32(img[offPayloadLength:], uint32(gz.Len()))
	img = append(img, make([]byte, 16)...)
	img = append(img, gz.Bytes()...)
	dir := t.TempDir()
	in := filepath.Join(dir, "bz")
	if err := os.WriteFile(in, img, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "vmlinux")
	if err := ExtractVmlinuxFile(context.Background(), in, out); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, elfBytes) {
		t.Errorf("extracted %d bytes, want %d", len(got), len(elfBytes))
	}
	// A payload that is not an ELF kernel is refused, and nothing is left.
	copy(elfBytes, "junk")
	gz.Reset()
	zw = newGzip(&gz)
	if _, err := zw.Write(elfBytes); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	img = append(img[:5*512+16], gz.Bytes()...)
	binary.LittleEndian.PutUint32(img[offPayloadLength:], uint32(gz.Len()))
	if err := os.WriteFile(in, img, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(out)
	if err := ExtractVmlinuxFile(context.Background(), in, out); err == nil || !strings.Contains(err.Error(), "ELF") {
		t.Errorf("junk payload: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("output left after failure: %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".vmlinux-*"))
	if len(left) != 0 {
		t.Errorf("temp files left: %v", left)
	}
}
