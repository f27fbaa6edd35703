package initramfs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wren-vm/wren/internal/qemutest"
	"github.com/wren-vm/wren/lib/kmod"
)

// buildTestInit compiles rootfs-builder/internal/testinit as a static binary.
func buildTestInit(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "testinit")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "github.com/wren-vm/wren/rootfs-builder/internal/testinit")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build testinit: %v\n%s", err, b)
	}
	return out
}

// TestBootLoadsModules boots Debian's kernel under QEMU TCG with an
// initramfs from Build and a test init that loads the module list: every
// listed module must load (dependency order is right, the files are intact),
// and the VM must power off by itself.
func TestBootLoadsModules(t *testing.T) {
	qemutest.Require(t)
	k := debianKernel(t)
	initrd := filepath.Join(t.TempDir(), "initrd.gz")
	// Two modules outside the load list, for loading by name: 9pnet_virtio
	// needs 9pnet, which nothing else loads.
	extra := map[string]string{}
	for _, m := range []string{"kernel/net/9p/9pnet.ko", "kernel/net/9p/9pnet_virtio.ko"} {
		extra["/lib/modules/"+k.Version+"/"+m] = filepath.Join(k.ModulesDir, m)
	}
	if err := BuildFile(initrd, Options{Init: buildTestInit(t), ModulesDir: k.ModulesDir, Files: extra}); err != nil {
		t.Fatal(err)
	}
	vm := qemutest.Start(t, qemutest.Config{Kernel: k.Vmlinux, Initrd: initrd, Append: "quiet testinit.modprobe=9pnet_virtio"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	atDone, err := vm.WaitFor(ctx, "testinit: done")
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(ctx); err != nil {
		t.Fatalf("qemu did not exit cleanly after power-off: %v", err)
	}
	console := vm.Console()
	if strings.Contains(console, "testinit: error") {
		t.Errorf("test init reported errors:\n%s", console)
	}
	if !strings.Contains(console, "testinit: modprobe 9pnet_virtio ok") {
		t.Errorf("module not loaded by name:\n%s", console)
	}
	m := regexp.MustCompile(`testinit: modules loaded=(\d+) in (\S+)`).FindStringSubmatch(console)
	if m == nil {
		t.Fatalf("no module line:\n%s", console)
	}
	loaded, _ := strconv.Atoi(m[1])
	want := countList(t, initrd)
	if loaded != want || want < len(DefaultModules) {
		t.Errorf("loaded %d modules, list has %d", loaded, want)
	}
	t.Logf("boot to testinit done: %s; %d modules loaded in %s (guest time)", atDone.Round(time.Millisecond), loaded, m[2])
}

func countList(t *testing.T, initrd string) int {
	t.Helper()
	gz, err := os.ReadFile(initrd)
	if err != nil {
		t.Fatal(err)
	}
	_, recs := readBack(t, gz)
	entries, err := kmod.ParseList(string(recs[strings.TrimPrefix(kmod.ListPath, "/")].data))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}
