// Package vmtest boots throwaway QEMU (TCG) guests wired to wren-vsockd, for
// the backend's integration tests and benchmarks: Debian's own kernel
// (rootfs-builder/kernelpkg), and an initramfs (rootfs-builder/initramfs)
// whose /init is ./guestinit, which loads the virtio and vsock modules
// (agent/kmodload) and serves test ports.
package vmtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/wren-vm/wren/rootfs-builder/initramfs"
	"github.com/wren-vm/wren/rootfs-builder/kernelpkg"
)

// GuestModules are what guestinit needs; their dependencies are added by
// the initramfs builder.
var GuestModules = []string{"virtio_pci", "vmw_vsock_virtio_transport"}

// Artifacts is a bootable kernel and initramfs.
type Artifacts struct {
	Kernel    string // ELF vmlinux
	Initramfs string
}

var (
	artMu   sync.Mutex
	artDone *Artifacts
)

// Build fetches the kernel (cached by kernelpkg) and builds the test
// initramfs into dir, once per process.
func Build(ctx context.Context, dir string) (*Artifacts, error) {
	artMu.Lock()
	defer artMu.Unlock()
	if artDone != nil {
		return artDone, nil
	}
	k, err := kernelpkg.Fetch(ctx, kernelpkg.Options{})
	if err != nil {
		return nil, fmt.Errorf("fetch kernel: %w", err)
	}
	initBin := filepath.Join(dir, "guestinit")
	_, self, _, _ := runtime.Caller(0)
	// go test puts the go command that runs it first in PATH.
	gobin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("build guestinit: %w", err)
	}
	cmd := exec.CommandContext(ctx, gobin, "build", "-trimpath", "-ldflags=-s -w", "-o", initBin, ".")
	cmd.Dir = filepath.Join(filepath.Dir(self), "guestinit")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build guestinit: %w: %s", err, out)
	}
	initrd := filepath.Join(dir, "initramfs.cpio.gz")
	if err := initramfs.BuildFile(initrd, initramfs.Options{
		Init:       initBin,
		ModulesDir: k.ModulesDir,
		Modules:    GuestModules,
	}); err != nil {
		return nil, fmt.Errorf("build initramfs: %w", err)
	}
	artDone = &Artifacts{Kernel: k.Vmlinux, Initramfs: initrd}
	return artDone, nil
}

// QEMUArgs are the machine and device arguments that give a guest
// vhost-user-vsock through wren-vsockd listening on vhostSocket: guest RAM
// must be a shared memfd for the backend to map it.
func QEMUArgs(vhostSocket string, memMB int) (machine string, args []string) {
	mem := fmt.Sprintf("%dM", memMB)
	return "q35,accel=tcg,memory-backend=mem", []string{
		"-object", "memory-backend-memfd,id=mem,size=" + mem + ",share=on",
		"-chardev", "socket,id=vsock0,path=" + vhostSocket,
		"-device", "vhost-user-vsock-pci,chardev=vsock0",
	}
}
