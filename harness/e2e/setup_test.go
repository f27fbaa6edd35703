package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/wren-vm/wren/harness/testagent"
	"github.com/wren-vm/wren/harness/vm"
	"github.com/wren-vm/wren/internal/testroot"
	"github.com/wren-vm/wren/rootfs-builder/cpio"
	"github.com/wren-vm/wren/rootfs-builder/image"
)

// requireVM skips when this machine cannot boot the pod VM at all.
func requireVM(t *testing.T) {
	t.Helper()
	testroot.Require(t, "the pod VM: virtiofsd, QEMU memfd backends")
	if _, err := exec.LookPath(vm.DefaultQEMU); err != nil {
		t.Skip("qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
	}
	if _, err := os.Stat(vm.DefaultVirtiofsd); err != nil {
		t.Skip("virtiofsd not installed (apt-get install qemu-system-common)")
	}
	if testing.Short() {
		t.Skip("pod VM tests boot a TCG guest: skipped in -short mode")
	}
}

// binaries returns the directory holding wren-agent, wren-vsockd and
// wrenctl, as testagent finds or builds them ($WREN_BIN under make test).
func binaries(t *testing.T) string {
	t.Helper()
	dir := filepath.Dir(testagent.Binary(t, "wren-agent"))
	for _, name := range []string{"wren-vsockd", "wrenctl"} {
		if d := filepath.Dir(testagent.Binary(t, name)); d != dir {
			t.Fatalf("%s is in %s, not beside wren-agent in %s", name, d, dir)
		}
	}
	return dir
}

// daxToken is the content of /wren-e2e.txt in the test's DAX image.
const daxToken = "read through DAX from the nvdimm\n"

// buildDAXImage writes a Kata-layout DAX image holding /wren-e2e.txt.
func buildDAXImage(t *testing.T, out string) {
	t.Helper()
	a := cpio.NewArchive()
	if err := a.File("/wren-e2e.txt", 0o644, []byte(daxToken)); err != nil {
		t.Fatal(err)
	}
	if err := image.Build(context.Background(), image.Options{Tree: a, Out: out}); err != nil {
		t.Fatalf("DAX image: %v", err)
	}
}

// blkToken is the content of /hello.txt on the hot-plugged disk.
const blkToken = "hello from a hot-plugged virtio-blk disk\n"

// buildExt4 makes a small ext4 disk image holding /hello.txt.
func buildExt4(t *testing.T, out string) {
	t.Helper()
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "hello.txt"), []byte(blkToken), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("mke2fs", "-q", "-F", "-t", "ext4", "-d", src, out, "16M")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v: %s", err, b)
	}
}

// testLog adapts t.Log to an io.Writer for progress lines.
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// processesMentioning lists live processes whose command line holds s (a
// VM's state directory names every helper it started).
func processesMentioning(s string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if e.Name() == strconv.Itoa(os.Getpid()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), s) {
			continue
		}
		if st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && strings.Contains(string(st), ") Z ") {
			continue // a zombie runs nothing
		}
		out = append(out, e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
	}
	return out
}
