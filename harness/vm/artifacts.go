package vm

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/wren-vm/wren/rootfs-builder/initramfs"
	"github.com/wren-vm/wren/rootfs-builder/kernelpkg"
)

// Artifacts are the boot files of a pod VM.
type Artifacts struct {
	Kernel        string // ELF vmlinux
	KernelVersion string // uname -r inside the guest
	Initrd        string
	RootImage     string // instead of Initrd: a DAX root image (Config.RootImage)
	Debug         bool   // the initramfs has busybox (a shell for the debug console)
}

// BuildArtifacts fetches Debian's kernel (cached by kernelpkg) and builds an
// initramfs with agent as /init into dir (the debug profile adds busybox).
func BuildArtifacts(ctx context.Context, agent, dir string, debug bool, progress io.Writer) (*Artifacts, error) {
	k, err := kernelpkg.Fetch(ctx, kernelpkg.Options{Progress: progress})
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	opts := initramfs.Options{Init: agent, ModulesDir: k.ModulesDir, Progress: progress}
	name := "wren-initramfs.cpio.gz"
	if debug {
		opts.Profile = initramfs.ProfileDebug
		name = "wren-initramfs-debug.cpio.gz"
	}
	out := filepath.Join(dir, name)
	if err := initramfs.BuildFile(out, opts); err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	return &Artifacts{Kernel: k.Vmlinux, KernelVersion: k.Version, Initrd: out, Debug: debug}, nil
}
