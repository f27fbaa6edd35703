package image

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wren-vm/wren/internal/qemutest"
	"github.com/wren-vm/wren/rootfs-builder/initramfs"
	"github.com/wren-vm/wren/rootfs-builder/kernelpkg"
)

// TestDAXImageInGuest boots Debian's kernel with the image as a read-only,
// unarmed NVDIMM (as Kata's runtime plugs it) and a test init that mounts
// /dev/pmem0p1 with -o dax and prints a known file from it.
func TestDAXImageInGuest(t *testing.T) {
	qemutest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k, err := kernelpkg.Fetch(ctx, kernelpkg.Options{})
	if err != nil {
		t.Fatalf("fetch Debian kernel: %v", err)
	}
	dir := t.TempDir()
	testinit := filepath.Join(dir, "testinit")
	build := exec.Command("go", "build", "-trimpath", "-o", testinit, "github.com/wren-vm/wren/rootfs-builder/internal/testinit")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build testinit: %v\n%s", err, out)
	}
	initrd := filepath.Join(dir, "initrd.gz")
	if err := initramfs.BuildFile(initrd, initramfs.Options{Init: testinit, ModulesDir: k.ModulesDir}); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "guest.img")
	if err := Build(ctx, Options{Tree: sampleTree(t), Out: img}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	vm := qemutest.Start(t, qemutest.Config{
		Kernel:  k.Vmlinux,
		Initrd:  initrd,
		Append:  "quiet testinit.dax=/etc/wren-image-test",
		Machine: "q35,accel=tcg,nvdimm=on",
		Mem:     "512M,slots=2,maxmem=2G",
		Args: []string{
			"-object", fmt.Sprintf("memory-backend-file,id=mem0,mem-path=%s,size=%d,readonly=on,share=on", img, st.Size()),
			"-device", "nvdimm,id=nv0,memdev=mem0,unarmed=on",
		},
	})
	if _, err := vm.WaitFor(ctx, "testinit: done"); err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(ctx); err != nil {
		t.Fatalf("VM did not power off: %v", err)
	}
	c := vm.Console()
	if strings.Contains(c, "testinit: error") {
		t.Errorf("test init reported an error:\n%s", c)
	}
	if !strings.Contains(c, `testinit: dax-file="hello from the DAX image"`) {
		t.Errorf("known file not read from the image:\n%s", c)
	}
	var mountLine string
	for _, l := range strings.Split(c, "\n") {
		if strings.HasPrefix(l, "testinit: mount /dev/pmem0p1 ") {
			mountLine = l
		}
	}
	if !strings.Contains(mountLine, "dax") || !strings.Contains(mountLine, " ro") {
		t.Errorf("pmem0p1 not mounted read-only with dax: %q", mountLine)
	}
	t.Logf("%s", mountLine)
	if strings.Contains(c, "DAX unsupported") {
		t.Errorf("kernel refused DAX:\n%s", c)
	}
}
