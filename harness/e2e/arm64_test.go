package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/wren-vm/wren/harness/vm"
	"github.com/wren-vm/wren/internal/testbundle"
)

// TestPodVMARM64 boots the arm64 pod VM (make kernel's arm64 Image, the
// cross-built agent, QEMU's virt machine under TCG) and runs the TestPodVM
// cases there, with arm64 busybox in the containers and the tests' helper
// binaries cross-built. DAXImage does not run (docs/pod-vm.md, "arm64").
func TestPodVMARM64(t *testing.T) {
	requireVM(t)
	t.Parallel()
	// make test installs it (install-deps.sh arm64): missing is a failure.
	if _, err := exec.LookPath(vm.DefaultQEMUARM64); err != nil {
		t.Fatalf("qemu-system-aarch64 not installed (scripts/install-deps.sh arm64): %v", err)
	}
	bins := binaries(t)
	bb := testbundle.ForeignBusybox(t, "arm64")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	work := t.TempDir()
	art, err := vm.BuildArtifactsFor(ctx, vm.ArtifactOptions{
		Agent: filepath.Join(bins, "wren-agent-arm64"), Dir: filepath.Join(work, "boot"),
		Kernel: vm.KernelWren, Arch: vm.ArchARM64,
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := podConfig(t, bins, art, "", filepath.Join(work, "vm"))
	cfg.Arch = vm.ArchARM64
	v, err := vm.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	runPodCasesFor(t, v, art.KernelVersion, podCases{
		busybox: bb, goarch: "arm64", noModules: true,
		skip: map[string]string{
			"DAXImage": "QEMU's virt machine describes an NVDIMM only through ACPI, which the direct-boot arm64 guest has not",
		},
	})
}
