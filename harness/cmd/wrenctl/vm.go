package main

import (
	"context"
	"errors"
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

// defaultVMDir is where `wrenctl vm` keeps a VM's state unless --dir or
// $WREN_VM_DIR says otherwise.
func defaultVMDir() string {
	if d := os.Getenv("WREN_VM_DIR"); d != "" {
		return d
	}
	return "/run/wren/vm"
}

const vmUsage = `usage: wrenctl vm up [--dir STATE] [--memory MiB] [--cpus N] [--debug] [--shared-dir DIR]
                     [--kernel VMLINUX] [--initrd INITRAMFS | --dax-root] [--image DAX_IMAGE] [--accel tcg|kvm|auto]
                     [--cid N] [--kernel-params WORDS] [--timeout DURATION] [--template TEMPLATE]
       wrenctl vm template create --dir TEMPLATE [--kernel VMLINUX] [--initrd INITRAMFS] [--memory MiB] ...
       wrenctl vm status [--dir STATE]
       wrenctl vm down [--dir STATE]
       wrenctl vm console [--dir STATE]     (a VM started with --debug; leave with Ctrl-])

A pod VM as a Kata shim runs one: QEMU, wren-vsockd (hybrid vsock), virtiofsd
sharing a host directory, the Wren agent as the guest's init. 'vm up' prints
addr= (for --addr) and shared_dir= (for run --shared-dir). STATE defaults to
$WREN_VM_DIR, else /run/wren/vm. 'wrenctl vm VERB --help' lists a verb's flags.`

// vmVerb is one of the vm subcommands.
type vmVerb struct {
	name, summary string
	flags         func(fs *flag.FlagSet) // beyond --dir; nil for none
	run           func(args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

var vmVerbs []*vmVerb

func init() {
	vmVerbs = []*vmVerb{
		{name: "up", summary: "boot a pod VM in STATE and wait until its agent answers; prints addr=, shared_dir= and boot_ms=", flags: vmUpFlags,
			run: func(args []string, _ io.Reader, stdout, stderr io.Writer) int { return vmUp(args, stdout, stderr) }},
		{name: "status", summary: "print the VM's state, addresses and helper processes; exit 0 when its agent serves",
			run: func(args []string, _ io.Reader, stdout, stderr io.Writer) int { return vmStatus(args, stdout, stderr) }},
		{name: "down", summary: "stop the VM in STATE (QEMU, virtiofsd, wren-vsockd) and remove its sockets; logs are kept",
			run: func(args []string, _ io.Reader, stdout, stderr io.Writer) int { return vmDown(args, stdout, stderr) }},
		{name: "template", summary: "template create: boot a pod VM, wait for its agent and save it in --dir as a template for vm up --template", flags: vmTemplateFlags, run: vmTemplate},
		{name: "console", summary: "attach to the guest's debug shell (a VM started with --debug; leave with Ctrl-])", run: vmConsole},
	}
}

func vmCommand(g globals, args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, vmUsage)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(os.Stdout, vmUsage)
		return exitOK
	case "_log":
		return vmLogPump(args[1:])
	}
	for _, v := range vmVerbs {
		if v.name == args[0] {
			return v.run(args[1:], os.Stdin, os.Stdout, os.Stderr)
		}
	}
	fmt.Fprintln(os.Stderr, vmUsage)
	return usageError(os.Stderr, "unknown vm command %q", args[0])
}

func findVMVerb(name string) *vmVerb {
	for _, v := range vmVerbs {
		if v.name == name {
			return v
		}
	}
	return nil
}

// vmDirFlag defines --dir, which every verb takes.
func vmDirFlag(fs *flag.FlagSet) *string {
	return fs.String("dir", defaultVMDir(), "VM state directory (default $WREN_VM_DIR or /run/wren/vm)")
}

// vmVerbUsage prints one verb's usage and flags.
func vmVerbUsage(w io.Writer, name string) {
	fmt.Fprintf(w, "usage: wrenctl vm %s [flags]\n", name)
	fs := flag.NewFlagSet("wrenctl vm "+name, flag.ContinueOnError)
	vmDirFlag(fs)
	if v := findVMVerb(name); v != nil {
		fmt.Fprintf(w, "\n%s.\n", upperFirst(v.summary))
		if v.flags != nil {
			v.flags(fs)
		}
	}
	fmt.Fprintln(w, "\nFlags:")
	printFlags(w, fs)
}

func vmFlags(name string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("wrenctl vm "+name, flag.ContinueOnError)
	return fs, vmDirFlag(fs)
}

// parseVMFlags parses a verb's flags: --help prints its usage on stdout
// and exits 0; no positional arguments are taken.
func parseVMFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (int, bool) {
	name := strings.TrimPrefix(fs.Name(), "wrenctl vm ")
	if code, ok := parseFlags(fs, args, func(w io.Writer) { vmVerbUsage(w, name) }, stdout, stderr); !ok {
		return code, false
	}
	if fs.NArg() > 0 {
		return usageError(stderr, "vm %s: unexpected argument %q", name, fs.Arg(0)), false
	}
	return 0, true
}

// vmUpOptions are vm up's flags beyond --dir.
type vmUpOptions struct {
	mem, cpus                                              int
	debug, daxRoot                                         bool
	shared, kernel, initrd, image, accel, firmware, params string
	arch                                                   string
	cid                                                    uint
	timeout                                                time.Duration
	template                                               string
}

func (o *vmUpOptions) define(fs *flag.FlagSet) {
	fs.IntVar(&o.mem, "memory", vm.DefaultMemoryMiB, "guest memory in MiB")
	fs.IntVar(&o.cpus, "cpus", vm.DefaultCPUs, "guest vCPUs")
	fs.BoolVar(&o.debug, "debug", false, "debug console on vsock 1026 (wrenctl vm console) and debug logging")
	fs.StringVar(&o.shared, "shared-dir", "", "host directory shared as virtio-fs tag kataShared (default STATE/shared)")
	fs.StringVar(&o.kernel, "kernel", "", "guest kernel (default out/vmlinux, else Debian's, fetched; on arm64 out/Image-wren-arm64); make kernel's out/vmlinux-wren gets an initramfs without modules")
	fs.StringVar(&o.initrd, "initrd", "", "Wren initramfs (default out/wren-initramfs[-debug].cpio.gz, else built from wren-agent, or wren-agent-arm64)")
	fs.StringVar(&o.arch, "arch", vm.ArchX86_64, "guest architecture: x86_64, or arm64 (qemu-system-aarch64, TCG; make kernel agent-arm64)")
	fs.StringVar(&o.image, "image", "", "DAX image attached as an nvdimm (optional)")
	fs.BoolVar(&o.daxRoot, "dax-root", false, "boot make kernel's kernel from a read-only DAX root image (nvdimm, built from wren-agent) instead of an initramfs: the agent stays in the host's page cache, out of guest RAM; x86_64")
	fs.StringVar(&o.accel, "accel", os.Getenv("WREN_ACCEL"), "tcg, kvm or auto (probe KVM); default $WREN_ACCEL, else tcg")
	fs.UintVar(&o.cid, "cid", vm.DefaultGuestCID, "guest vsock context ID (3 or above)")
	fs.StringVar(&o.firmware, "firmware", os.Getenv("WREN_FIRMWARE"), "QEMU -bios: a path or seabios (default $WREN_FIRMWARE, else qboot when installed)")
	fs.StringVar(&o.params, "kernel-params", "", "extra kernel command line words (e.g. agent.hotplug_timeout=10s)")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Minute, "how long to wait for the agent")
	fs.StringVar(&o.template, "template", "", "start a clone of this template (wrenctl vm template create) instead of booting")
}

func vmUpFlags(fs *flag.FlagSet) { new(vmUpOptions).define(fs) }

func vmUp(args []string, stdout, stderr io.Writer) int {
	fs, dir := vmFlags("up")
	var o vmUpOptions
	o.define(fs)
	if code, ok := parseVMFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	// Ctrl-C during the boot fails Start, which stops what it started (the
	// helpers run in their own sessions and do not see the signal).
	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(sigCtx, o.timeout+time.Minute)
	defer cancel()
	// Before anything is built: a running VM makes all of it wasted.
	if old, err := vm.Attach(*dir); err == nil && old.Running() {
		fmt.Fprintf(stderr, "wrenctl vm up: a VM already runs in %s (addr=%s); stop it first: wrenctl vm down --dir %s\n", old.Dir, old.Addr(), old.Dir)
		return exitError
	}
	if o.template != "" {
		return vmUpClone(ctx, fs, &o, *dir, stdout, stderr)
	}
	k, ird, root, err := bootFiles(ctx, &o, *dir, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "wrenctl vm up: %v\n", err)
		return exitError
	}
	abs, _ := filepath.Abs(*dir)
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "wrenctl vm up: %v\n", err)
		return exitError
	}
	v, err := vm.Start(ctx, vm.Config{
		Dir: *dir, Kernel: k, Initrd: ird, RootImage: root, Arch: o.arch, SharedDir: o.shared, Image: o.image,
		MemoryMiB: o.mem, CPUs: o.cpus, GuestCID: uint32(o.cid), Debug: o.debug, Accel: o.accel,
		KernelParams: strings.Fields(o.params), Firmware: o.firmware,
		Detach:       true,
		LogCollector: []string{exe, "vm", "_log", "--dir", abs},
		BootTimeout:  o.timeout,
		Progress:     stderr,
	})
	if err != nil {
		fmt.Fprintf(stderr, "wrenctl vm up: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stdout, "addr=%s\nshared_dir=%s\nboot_ms=%.0f\n", v.Addr(), v.SharedDir, v.BootMS)
	fmt.Fprintf(stderr, "vm: up in %v; stop it with: wrenctl vm down --dir %s\n", v.Booted.Round(time.Millisecond), abs)
	return exitOK
}

// bootFiles picks the kernel and initramfs (or DAX root image): flags,
// then `make image`'s out/ files, then Debian's kernel with an initramfs
// built from the wren-agent binary next to wrenctl. A make kernel kernel
// (its .config beside it, e.g. out/vmlinux-wren) without --initrd gets an
// initramfs built for it, without modules; so does arm64, which has only
// that kernel; --dax-root gets a root image built for that kernel.
func bootFiles(ctx context.Context, o *vmUpOptions, dir string, progress io.Writer) (kernel, initrd, root string, err error) {
	if o.daxRoot {
		if o.initrd != "" {
			return "", "", "", errors.New("--dax-root boots from a root image, not from --initrd")
		}
		if o.kernel != "" && vm.ConfigBeside(o.kernel) == "" {
			return "", "", "", fmt.Errorf("--dax-root needs make kernel's kernel (nvdimm, pmem and ext4 built in), not %s", o.kernel)
		}
		return wrenKernelBootFiles(ctx, o, dir, progress)
	}
	if o.arch == vm.ArchARM64 || (o.kernel != "" && o.initrd == "" && vm.ConfigBeside(o.kernel) != "") {
		return wrenKernelBootFiles(ctx, o, dir, progress)
	}
	kernel, initrd, err = debianBootFiles(ctx, o, dir, progress)
	return kernel, initrd, "", err
}

// debianBootFiles is bootFiles for any kernel but make kernel's.
func debianBootFiles(ctx context.Context, o *vmUpOptions, dir string, progress io.Writer) (string, string, error) {
	kernel, initrd, debug := o.kernel, o.initrd, o.debug
	if kernel == "" {
		if _, err := os.Stat("out/vmlinux"); err == nil {
			kernel = "out/vmlinux"
		}
	}
	if initrd == "" {
		name := "out/wren-initramfs.cpio.gz"
		if debug {
			name = "out/wren-initramfs-debug.cpio.gz"
		}
		if _, err := os.Stat(name); err == nil {
			initrd = name
		}
	}
	if kernel != "" && initrd != "" {
		return kernel, initrd, nil
	}
	agent, err := vm.FindBinary("wren-agent")
	if err != nil {
		return "", "", fmt.Errorf("no initramfs given and no wren-agent to build one (make agent, or make image): %w", err)
	}
	fmt.Fprintf(progress, "vm: building the initramfs from %s\n", agent)
	a, err := vm.BuildArtifacts(ctx, agent, filepath.Join(dir, "boot"), debug, progress)
	if err != nil {
		return "", "", err
	}
	if kernel == "" {
		kernel = a.Kernel
	}
	if initrd == "" {
		initrd = a.Initrd
	}
	return kernel, initrd, nil
}

// wrenKernelBootFiles boots make kernel's kernel (--kernel, else out/'s
// for --arch) with an initramfs (or, for --dax-root, a root image) built
// for it from wren-agent (or wren-agent-arm64), unless --initrd names one.
func wrenKernelBootFiles(ctx context.Context, o *vmUpOptions, dir string, progress io.Writer) (kernel, initrd, root string, err error) {
	if o.initrd != "" {
		if o.kernel != "" {
			return o.kernel, o.initrd, "", nil
		}
		k, err := vm.FindWrenKernel(o.arch)
		if err != nil {
			return "", "", "", err
		}
		return k.Kernel, o.initrd, "", nil
	}
	name := "wren-agent"
	if o.arch == vm.ArchARM64 {
		name = "wren-agent-arm64"
	}
	agent, err := vm.FindBinary(name)
	if err != nil {
		return "", "", "", fmt.Errorf("no %s to build the guest's root from (make agent, or make agent-arm64): %w", name, err)
	}
	fmt.Fprintf(progress, "vm: building the guest's root from %s\n", agent)
	a, err := vm.BuildArtifactsFor(ctx, vm.ArtifactOptions{
		Agent: agent, Dir: filepath.Join(dir, "boot"), Debug: o.debug,
		Kernel: vm.KernelWren, KernelFile: o.kernel, Arch: o.arch, RootImage: o.daxRoot, Progress: progress,
	})
	if err != nil {
		return "", "", "", err
	}
	return a.Kernel, a.Initrd, a.RootImage, nil
}

func vmStatus(args []string, stdout, stderr io.Writer) int {
	fs, dir := vmFlags("status")
	if code, ok := parseVMFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	v, err := vm.Attach(*dir)
	if err != nil {
		fmt.Fprintf(stdout, "state=down\n")
		return exitError
	}
	state := "down"
	if v.Running() {
		state = "running"
	}
	fmt.Fprintf(stdout, "state=%s\naddr=%s\nshared_dir=%s\nconsole=%s\naccel=%s\ndebug=%v\nstarted=%s\n",
		state, v.Addr(), v.SharedDir, v.Console, v.Accel, v.Debug, v.Started.Format(time.RFC3339))
	for _, p := range v.Procs {
		fmt.Fprintf(stdout, "proc=%s pid=%d running=%v\n", p.Name, p.PID, p.Running())
	}
	if state != "running" {
		return exitError
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := v.Check(ctx); err != nil {
		fmt.Fprintf(stdout, "agent=unreachable (%v)\n", err)
		return exitError
	}
	fmt.Fprintf(stdout, "agent=serving\n")
	return exitOK
}

func vmDown(args []string, stdout, stderr io.Writer) int {
	fs, dir := vmFlags("down")
	if code, ok := parseVMFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	v, err := vm.Attach(*dir)
	if errors.Is(err, os.ErrNotExist) {
		// Like stopping a stopped service: the state asked for holds.
		abs, _ := filepath.Abs(*dir)
		fmt.Fprintf(stderr, "vm: no VM running in %s\n", abs)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "wrenctl vm down: %v\n", err)
		return exitError
	}
	if err := v.Stop(); err != nil {
		fmt.Fprintf(stderr, "wrenctl vm down: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stderr, "vm: stopped; logs kept in %s\n", v.Dir)
	return exitOK
}

// vmLogPump is the detached helper `vm up` leaves behind to copy the
// agent's log stream into STATE/agent.log.
func vmLogPump(args []string) int {
	fs, dir := vmFlags("_log")
	if code, ok := parseVMFlags(fs, args, os.Stdout, os.Stderr); !ok {
		return code
	}
	if err := vm.PumpLog(context.Background(), *dir); err != nil {
		fmt.Fprintf(os.Stderr, "wrenctl vm _log: %v\n", err)
		return exitError
	}
	return exitOK
}
