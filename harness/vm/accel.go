package vm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"time"
)

// kvmProbeTimeout bounds the probe boot. A working KVM boots the kernel to
// its "no root" panic in about a second; nested KVM on the CI machines
// hangs instead, which is what the timeout catches.
const kvmProbeTimeout = 8 * time.Second

// chooseAccel resolves cfg.Accel to "kvm" or "tcg".
func chooseAccel(ctx context.Context, cfg *Config) (string, error) {
	switch cfg.Accel {
	case "", "tcg":
		return "tcg", nil
	case "kvm":
		return "kvm", nil
	case "auto":
		if KVMWorks(ctx, cfg.QEMU, cfg.Kernel) {
			return "kvm", nil
		}
		cfg.progress("vm: KVM probe failed; using TCG")
		return "tcg", nil
	}
	return "", fmt.Errorf("vm: accelerator %q: want tcg, kvm or auto", cfg.Accel)
}

// KVMWorks boots kernel under KVM without an initramfs: the kernel panics
// for want of a root filesystem and, with panic=-1 and -no-reboot, QEMU
// exits. Exiting within the timeout proves KVM runs guest code.
func KVMWorks(ctx context.Context, qemu, kernel string) bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	ctx, cancel := context.WithTimeout(ctx, kvmProbeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-machine", "q35,accel=kvm", "-cpu", "host", "-m", "128M",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "none",
		"-kernel", kernel, "-append", "panic=-1 quiet")
	return cmd.Run() == nil && ctx.Err() == nil
}
