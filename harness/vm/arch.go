package vm

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
)

// Guest architectures (Config.Arch).
const (
	ArchX86_64 = "x86_64"
	ArchARM64  = "arm64"
	// DefaultQEMUARM64 is Debian's qemu-system-arm (apt-get install
	// qemu-system-arm).
	DefaultQEMUARM64 = "qemu-system-aarch64"
)

// fillArch checks Config.Arch and applies what differs on arm64: QEMU's
// aarch64 binary, no x86 firmware, TCG (this host cannot run an arm64 guest
// under KVM), and no nvdimm: QEMU describes an NVDIMM to the guest through
// ACPI's NFIT, and the arm64 pod VM boots its Image directly with a device
// tree, without the UEFI firmware arm64 ACPI needs.
func (c *Config) fillArch() error {
	switch c.Arch {
	case "", ArchX86_64:
		c.Arch = ArchX86_64
		return nil
	case ArchARM64:
	default:
		return fmt.Errorf("vm: architecture %q: want %s or %s", c.Arch, ArchX86_64, ArchARM64)
	}
	if c.QEMU == "" {
		c.QEMU = DefaultQEMUARM64
	}
	c.Firmware = "seabios" // QEMU's default: on virt, none (direct boot)
	if c.Accel == "kvm" || c.Accel == "auto" {
		c.Accel = "tcg"
	}
	if c.Image != "" || c.RootImage != "" {
		return errors.New("vm: a DAX image (nvdimm) is not supported on arm64: QEMU's virt machine describes NVDIMMs only through ACPI, which the direct-boot arm64 pod VM has not")
	}
	return nil
}

// consoleDevice is the guest's serial console: the 16550 on x86, the PL011
// of QEMU's virt machine on arm64.
func consoleDevice(cfg *Config) string {
	if cfg.Arch == ArchARM64 {
		return "ttyAMA0"
	}
	return "ttyS0"
}

// qemuArgsARM64 is qemuArgs for QEMU's arm64 virt machine: GICv3, the
// emulated CPU "max" with the cheap implementation-defined pointer
// authentication (QEMU's architected one costs much time under TCG), guest
// RAM as a shared memfd for the vhost-user backends, and the same vsock and
// virtio-fs devices on the PCIe root bus (virt has a generic PCIe host).
func qemuArgsARM64(cfg *Config, accel string) []string {
	mem := fmt.Sprintf("%dM", cfg.MemoryMiB)
	args := []string{
		"-name", "wren-" + filepath.Base(cfg.Dir),
		"-machine", "virt,gic-version=3,accel=" + accel + ",memory-backend=ram",
		"-cpu", "max,pauth-impdef=on", "-smp", strconv.Itoa(cfg.CPUs), "-m", mem,
		"-object", "memory-backend-memfd,id=ram,size=" + mem + ",share=on",
		"-nodefaults", "-no-user-config", "-display", "none",
	}
	args = append(args, podArgs(cfg)...)
	return append(args, hotplugPortArgs()...)
}
