package e2e

import (
	"os/exec"
	"testing"

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
	bb := testbundle.ForeignBusybox(t, "arm64")
	v, art := startPodVM(t, vm.ArtifactOptions{Kernel: vm.KernelWren, Arch: vm.ArchARM64}, false)
	runPodCasesFor(t, v, art.KernelVersion, podCases{
		busybox: bb, goarch: "arm64", noModules: true,
		skip: map[string]string{
			"DAXImage": "QEMU's virt machine describes an NVDIMM only through ACPI, which the direct-boot arm64 guest has not",
		},
	})
}
