package initramfs

import (
	"fmt"
	"io"

	"github.com/wren-vm/wren/guest-kernel-config/kconfig"
)

// ModuleOptions names the Kconfig option that builds each module the
// builder knows (DefaultModules and ForbiddenModules). With
// Options.KernelConfig the builder reads the kernel's .config and installs
// only the modules whose option is "m": what the kernel has built in ("y")
// needs no file and no load list entry.
var ModuleOptions = map[string]string{
	"virtio_pci":                 "VIRTIO_PCI",
	"virtio_mmio":                "VIRTIO_MMIO",
	"vmw_vsock_virtio_transport": "VIRTIO_VSOCKETS",
	"virtiofs":                   "VIRTIO_FS",
	"fuse":                       "FUSE_FS",
	"virtio_blk":                 "VIRTIO_BLK",
	"virtio_scsi":                "SCSI_VIRTIO",
	"sd_mod":                     "BLK_DEV_SD",
	"virtio_net":                 "VIRTIO_NET",
	"virtio_console":             "VIRTIO_CONSOLE",
	"nfit":                       "ACPI_NFIT",
	"nd_pmem":                    "BLK_DEV_PMEM",
	"dax_pmem":                   "DEV_DAX_PMEM",
	"crc32c_generic":             "CRYPTO_CRC32C",
	"ext4":                       "EXT4_FS",
	"overlay":                    "OVERLAY_FS",
	"vsock_loopback":             "VSOCKETS_LOOPBACK",
}

// modulesNotBuiltin returns the subset of names the kernel whose .config is
// at path builds as modules. Built-in ones are dropped; ones the kernel
// lacks altogether are dropped with a progress line (the kernel config
// checker, not the image builder, guards the kernel's contents); a module
// of ForbiddenModules built in is refused. A name without a known option is
// kept: only its modules directory can tell.
func modulesNotBuiltin(path string, names []string, prog io.Writer) ([]string, error) {
	cfg, err := kconfig.ReadConfig(path)
	if err != nil {
		return nil, fmt.Errorf("initramfs: kernel config: %w", err)
	}
	for _, f := range ForbiddenModules {
		if opt, ok := ModuleOptions[f]; ok && cfg.Get(opt) == "y" {
			return nil, fmt.Errorf("initramfs: the kernel has %s built in (CONFIG_%s=y): containers could reach the agent through it; use a kernel without it", f, opt)
		}
	}
	var keep, builtin, absent []string
	for _, n := range names {
		opt, ok := ModuleOptions[n]
		switch {
		case !ok:
			keep = append(keep, n)
		case cfg.Get(opt) == "y":
			builtin = append(builtin, n)
		case cfg.Get(opt) == "m":
			keep = append(keep, n)
		default:
			absent = append(absent, n)
		}
	}
	progress(prog, "initramfs: kernel %s: %d of %d modules built in, %d as modules", path, len(builtin), len(names), len(keep))
	if len(absent) > 0 {
		progress(prog, "initramfs: not in this kernel, left out: %v", absent)
	}
	return keep, nil
}
