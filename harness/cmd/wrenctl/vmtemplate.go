package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/wren-vm/wren/harness/vm"
)

// vmTemplateOptions are the flags of vm template create beyond --dir.
type vmTemplateOptions struct {
	mem, cpus                            int
	kernel, initrd, image, accel, params string
	cid                                  uint
	timeout                              time.Duration
}

func (o *vmTemplateOptions) define(fs *flag.FlagSet) {
	fs.IntVar(&o.mem, "memory", vm.DefaultMemoryMiB, "guest memory in MiB (every clone has as much)")
	fs.IntVar(&o.cpus, "cpus", vm.DefaultCPUs, "guest vCPUs")
	fs.StringVar(&o.kernel, "kernel", "", "guest kernel (default out/vmlinux, else Debian's, fetched)")
	fs.StringVar(&o.initrd, "initrd", "", "Wren initramfs (default out/wren-initramfs.cpio.gz, else built from wren-agent)")
	fs.StringVar(&o.image, "image", "", "DAX image attached as an nvdimm (optional; every clone gets the same)")
	fs.StringVar(&o.accel, "accel", os.Getenv("WREN_ACCEL"), "tcg, kvm or auto (probe KVM); default $WREN_ACCEL, else tcg")
	fs.UintVar(&o.cid, "cid", vm.DefaultGuestCID, "guest vsock context ID while the template boots (a clone has its own)")
	fs.StringVar(&o.params, "kernel-params", "", "extra kernel command line words (every clone keeps them)")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Minute, "how long to wait for the agent")
}

func vmTemplateFlags(fs *flag.FlagSet) { new(vmTemplateOptions).define(fs) }

// vmTemplate is `wrenctl vm template create --dir T`: boot the pod VM that
// vm up would, wait for its agent and save it as a template in T.
func vmTemplate(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "create" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			vmVerbUsage(stdout, "template")
			return exitOK
		}
		return usageError(stderr, "usage: wrenctl vm template create --dir TEMPLATE [flags]")
	}
	fs, dir := vmFlags("template")
	var o vmTemplateOptions
	o.define(fs)
	if code, ok := parseVMFlags(fs, args[1:], stdout, stderr); !ok {
		return code
	}
	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(sigCtx, o.timeout+time.Minute)
	defer cancel()
	k, ird, _, err := bootFiles(ctx, &vmUpOptions{kernel: o.kernel, initrd: o.initrd}, *dir, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "wrenctl vm template create: %v\n", err)
		return exitError
	}
	m, err := vm.CreateTemplate(ctx, vm.Config{
		Dir: *dir, Kernel: k, Initrd: ird, Image: o.image,
		MemoryMiB: o.mem, CPUs: o.cpus, GuestCID: uint32(o.cid), Accel: o.accel,
		KernelParams: strings.Fields(o.params), BootTimeout: o.timeout, Progress: stderr,
	})
	if err != nil {
		fmt.Fprintf(stderr, "wrenctl vm template create: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stdout, "template=%s\nboot_ms=%.0f\nsave_ms=%.0f\nmem_in_use_mib=%d\n",
		*dir, m.BootMS, m.SaveMS, m.Mem.Pages*4096>>20)
	return exitOK
}

// vmUpClone is vm up --template: a clone of the template instead of a boot.
func vmUpClone(ctx context.Context, fs *flag.FlagSet, o *vmUpOptions, dir string, stdout, stderr io.Writer) int {
	cfg, err := cloneConfig(fs, o, dir, stderr)
	if err != nil {
		return usageError(stderr, "vm up --template: %v", err)
	}
	v, st, err := vm.StartClone(ctx, o.template, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "wrenctl vm up: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stdout, "addr=%s\nshared_dir=%s\nboot_ms=%.0f\nclone_prepare_ms=%.0f\n", v.Addr(), v.SharedDir, v.BootMS, st.CheckMS)
	fmt.Fprintf(stderr, "vm: clone of %s up in %v; stop it with: wrenctl vm down --dir %s\n", v.Template, v.Booted.Round(time.Millisecond), v.Dir)
	return exitOK
}

// cloneConfig is vm up's configuration for a clone: the machine is the
// template's, so only the flags given on the command line are passed on,
// for StartClone to check against the template.
func cloneConfig(fs *flag.FlagSet, o *vmUpOptions, dir string, stderr io.Writer) (vm.Config, error) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	// What the guest booted with is the template's.
	for _, name := range []string{"debug", "firmware", "kernel-params"} {
		if set[name] {
			return vm.Config{}, fmt.Errorf("--%s is the template's (give it to vm template create), not a clone's", name)
		}
	}
	abs, _ := filepath.Abs(dir)
	exe, _ := os.Executable()
	cfg := vm.Config{
		Dir: dir, SharedDir: o.shared, GuestCID: uint32(o.cid), Kernel: o.kernel, Initrd: o.initrd, Image: o.image,
		Detach: true, LogCollector: []string{exe, "vm", "_log", "--dir", abs},
		BootTimeout: o.timeout, Progress: stderr,
	}
	if set["memory"] {
		cfg.MemoryMiB = o.mem
	}
	if set["cpus"] {
		cfg.CPUs = o.cpus
	}
	if set["accel"] {
		cfg.Accel = o.accel
	}
	return cfg, nil
}
