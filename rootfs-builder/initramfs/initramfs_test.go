package initramfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wren-vm/wren/internal/testroot"
	"github.com/wren-vm/wren/lib/kmod"
	"github.com/wren-vm/wren/rootfs-builder/cpio"
	"github.com/wren-vm/wren/rootfs-builder/kernelpkg"
)

func debianKernel(t *testing.T) *kernelpkg.Kernel {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k, err := kernelpkg.Fetch(ctx, kernelpkg.Options{})
	if err != nil {
		t.Fatalf("fetch Debian kernel: %v", err)
	}
	return k
}

// staticInit returns a static ELF to stand in for the agent: busybox-static
// (these tests check the archive, not what /init does).
func staticInit(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(DefaultBusybox); err != nil {
		t.Skip("busybox-static not installed (apt-get install busybox-static)")
	}
	return DefaultBusybox
}

type record struct {
	h    *cpio.Header
	data []byte
}

func readBack(t *testing.T, gz []byte) ([]string, map[string]record) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	if !zr.ModTime.IsZero() || zr.Name != "" {
		t.Errorf("gzip header leaks mtime %v / name %q", zr.ModTime, zr.Name)
	}
	return readCPIO(t, zr)
}

func readCPIO(t *testing.T, in io.Reader) ([]string, map[string]record) {
	t.Helper()
	r := cpio.NewReader(in)
	var order []string
	recs := map[string]record{}
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, h.Name)
		recs[h.Name] = record{h, data}
	}
	return order, recs
}

func build(t *testing.T, opts Options) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Build(&buf, opts); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestBuildReproducible(t *testing.T) {
	k := debianKernel(t)
	extra := filepath.Join(t.TempDir(), "extra")
	if err := os.WriteFile(extra, []byte("extra\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := Options{Init: staticInit(t), ModulesDir: k.ModulesDir, Profile: ProfileDebug, Files: map[string]string{"/etc/extra": extra}}
	first := build(t, opts)
	// Touching an input's mtime and owner changes nothing in the output.
	if err := os.Chtimes(extra, time.Now(), time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if testroot.Is() { // only root may give the file away
		if err := os.Chown(extra, 1234, 1234); err != nil {
			t.Fatal(err)
		}
	}
	second := build(t, opts)
	if !bytes.Equal(first, second) {
		t.Fatal("two builds from the same inputs differ")
	}
	opts.MTime = 1
	if bytes.Equal(first, build(t, opts)) {
		t.Fatal("MTime has no effect")
	}
}

// TestBuildFileUnchanged: rebuilding from the same inputs leaves the file
// in place (same inode); other inputs replace it.
func TestBuildFileUnchanged(t *testing.T) {
	out := filepath.Join(t.TempDir(), "initrd.cpio")
	opts := Options{Init: staticInit(t), Compression: CompressNone}
	if err := BuildFile(out, opts); err != nil {
		t.Fatal(err)
	}
	first, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := BuildFile(out, opts); err != nil {
		t.Fatal(err)
	}
	second, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(first, second) {
		t.Error("a rebuild from the same inputs replaced the file")
	}
	opts.MTime = 1
	if err := BuildFile(out, opts); err != nil {
		t.Fatal(err)
	}
	third, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(second, third) {
		t.Error("a build from other inputs kept the old file")
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".*")); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestBuildContents(t *testing.T) {
	k := debianKernel(t)
	init := staticInit(t)
	extra := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(extra, []byte("#!/bin/sh\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	gz := build(t, Options{Init: init, ModulesDir: k.ModulesDir, Profile: ProfileDebug, MTime: 42, Files: map[string]string{"usr/bin/tool": extra}})
	order, recs := readBack(t, gz)

	for i := 1; i < len(order); i++ {
		if order[i-1] >= order[i] {
			t.Fatalf("entries not sorted: %q before %q", order[i-1], order[i])
		}
	}
	for name, r := range recs {
		if r.h.UID != 0 || r.h.GID != 0 || r.h.MTime != 42 {
			t.Errorf("%s: uid %d gid %d mtime %d", name, r.h.UID, r.h.GID, r.h.MTime)
		}
	}
	initBytes, _ := os.ReadFile(init)
	if r := recs["init"]; r.h == nil || r.h.Type != cpio.TypeFile || r.h.Perm != 0o755 || !bytes.Equal(r.data, initBytes) {
		t.Fatalf("/init wrong: %+v", r.h)
	}
	if r := recs["dev/console"]; r.h == nil || r.h.Type != cpio.TypeCharDev || r.h.Major != 5 || r.h.Minor != 1 || r.h.Perm != 0o600 {
		t.Errorf("/dev/console = %+v", r.h)
	}
	if r := recs["tmp"]; r.h == nil || r.h.Perm != 0o1777 {
		t.Errorf("/tmp = %+v", r.h)
	}
	if r := recs["usr/bin/tool"]; r.h == nil || r.h.Perm != 0o755 || string(r.data) != "#!/bin/sh\n" {
		t.Errorf("extra file = %+v", r.h)
	}
	if r := recs["bin/sh"]; r.h == nil || r.h.Type != cpio.TypeSymlink || string(r.data) != "busybox" {
		t.Errorf("/bin/sh = %+v %q", r.h, r.data)
	}
	if r := recs["usr/bin/awk"]; r.h == nil || string(r.data) != "../../bin/busybox" {
		t.Errorf("/usr/bin/awk = %+v %q", r.h, r.data)
	}
	if r := recs["sbin/init"]; r.h == nil || string(r.data) != "../init" {
		t.Errorf("/sbin/init must stay ours, got %q", r.data)
	}

	// Module order, checked independently of kmod.Resolve: re-read each
	// archived module's .modinfo and check every dependency came earlier.
	list, ok := recs[strings.TrimPrefix(kmod.ListPath, "/")]
	if !ok {
		t.Fatal("no module load list")
	}
	entries, err := kmod.ParseList(string(list.data))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < len(DefaultModules) {
		t.Fatalf("%d modules listed, fewer than the %d requested", len(entries), len(DefaultModules))
	}
	seen := map[string]bool{}
	for _, e := range entries {
		if !strings.HasPrefix(e.Path, "/lib/modules/"+k.Version+"/kernel/") {
			t.Errorf("module path %s outside /lib/modules/%s", e.Path, k.Version)
		}
		r, ok := recs[strings.TrimPrefix(e.Path, "/")]
		if !ok {
			t.Fatalf("listed module %s not in the archive", e.Path)
		}
		info, err := kmod.Modinfo(r.data)
		if err != nil {
			t.Fatalf("%s: %v", e.Path, err)
		}
		// The kernel treats '-' and '_' in module names alike, and
		// depends= spells some names with '-' (crc-t10dif, t10-pi).
		norm := func(n string) string { return strings.ReplaceAll(n, "-", "_") }
		for _, d := range info["depends"] {
			for _, dep := range strings.Split(d, ",") {
				if dep != "" && !seen[norm(dep)] {
					t.Errorf("%s loads before its dependency %s", e.Path, dep)
				}
			}
		}
		seen[norm(info["name"][0])] = true
	}
	if r, ok := recs["lib/modules/"+k.Version+"/modules.builtin"]; !ok || !strings.Contains(string(r.data), "unix.ko") {
		t.Error("modules.builtin missing")
	}
	for _, want := range DefaultModules {
		if !seen[want] {
			t.Errorf("requested module %s missing", want)
		}
	}
	// No local vsock transport: through one a container reaches the
	// agent's API (the module list and the archive both checked).
	for _, f := range ForbiddenModules {
		if seen[f] {
			t.Errorf("module %s is in the guest image", f)
		}
	}
	for name := range recs {
		if strings.Contains(name, "vsock_loopback") {
			t.Errorf("%s is in the guest image", name)
		}
	}
	for name := range recs {
		if strings.HasSuffix(name, ".ko") && !seen[kmod.NameOf(name)] {
			t.Errorf("module %s archived but not in the load list", name)
		}
	}
}

func TestBuildWithoutModules(t *testing.T) {
	_, recs := readBack(t, build(t, Options{Init: staticInit(t)}))
	if list, ok := recs[strings.TrimPrefix(kmod.ListPath, "/")]; ok {
		t.Errorf("a load list with nothing to load: %q", list.data)
	}
	if _, ok := recs["bin/busybox"]; ok {
		t.Error("busybox in the default profile")
	}
}

// An uncompressed build is the archive the gzip'd build inflates to,
// byte for byte.
func TestBuildUncompressed(t *testing.T) {
	opts := Options{Init: staticInit(t), Files: map[string]string{"/etc/wren-test": "/etc/hostname"}}
	gz := build(t, opts)
	opts.Compression = CompressNone
	raw := build(t, opts)
	if !bytes.HasPrefix(raw, []byte("070701")) {
		t.Fatalf("uncompressed build starts with %q, want a newc header", raw[:min(len(raw), 6)])
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	inflated, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, inflated) {
		t.Fatalf("uncompressed build (%d bytes) differs from the inflated gzip build (%d bytes)", len(raw), len(inflated))
	}
	order, recs := readCPIO(t, bytes.NewReader(raw))
	if _, ok := recs["init"]; !ok {
		t.Errorf("no /init in %v", order)
	}
}

func TestBuildErrors(t *testing.T) {
	init := staticInit(t)
	k := debianKernel(t)
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"no init", Options{}, "no init"},
		{"missing init", Options{Init: "/nonexistent/wren-agent"}, "no such file"},
		{"not ELF", Options{Init: "/etc/passwd"}, "not an ELF"},
		{"dynamic init", Options{Init: "/bin/ls"}, "dynamically linked"},
		{"profile", Options{Init: init, Profile: "fat"}, "unknown profile"},
		{"compression", Options{Init: init, Compression: "zstd"}, "unknown compression"},
		{"bad module", Options{Init: init, ModulesDir: k.ModulesDir, Modules: []string{"virtio_blk", "wren_nope"}}, "wren_nope"},
		{"vsock loopback", Options{Init: init, ModulesDir: k.ModulesDir, Modules: []string{"vmw_vsock_virtio_transport", "vsock_loopback"}}, "vsock_loopback is refused"},
		{"no modules dir", Options{Init: init, ModulesDir: "/nonexistent/lib/modules/x"}, "kernel modules directory"},
		{"modules without dir", Options{Init: init, Modules: []string{"fuse"}}, "no kernel modules directory"},
		{"busybox", Options{Init: init, Profile: ProfileDebug, Busybox: "/nonexistent/busybox"}, "busybox-static"},
		{"extra file", Options{Init: init, Files: map[string]string{"/x": "/nonexistent/x"}}, "/x"},
	}
	for _, c := range cases {
		err := Build(io.Discard, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
	// BuildFile leaves nothing behind on failure.
	dir := t.TempDir()
	if err := BuildFile(filepath.Join(dir, "out.cpio.gz"), Options{}); err == nil {
		t.Fatal("BuildFile without init succeeded")
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

// BenchmarkBuild measures a full initramfs build (module resolution,
// archive, gzip) with Debian's default module set.
func BenchmarkBuild(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k, err := kernelpkg.Fetch(ctx, kernelpkg.Options{})
	if err != nil {
		b.Fatal(err)
	}
	opts := Options{Init: DefaultBusybox, ModulesDir: k.ModulesDir}
	var size int
	for b.Loop() {
		var buf bytes.Buffer
		if err := Build(&buf, opts); err != nil {
			b.Fatal(err)
		}
		size = buf.Len()
	}
	b.ReportMetric(float64(size), "bytes")
}
