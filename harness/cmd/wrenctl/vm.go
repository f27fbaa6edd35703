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

func init() { subcommands["vm"] = vmCommand }

// defaultVMDir is where `wrenctl vm` keeps a VM's state unless --dir or
// $WREN_VM_DIR says otherwise.
func defaultVMDir() string {
	if d := os.Getenv("WREN_VM_DIR"); d != "" {
		return d
	}
	return "/run/wren/vm"
}

const vmUsage = `usage: wrenctl vm up [--dir STATE] [--memory MiB] [--cpus N] [--debug] [--shared-dir DIR]
                     [--kernel VMLINUX] [--initrd INITRAMFS] [--image DAX_IMAGE] [--accel tcg|kvm|auto]
                     [--cid N] [--kernel-params WORDS] [--timeout DURATION]
       wrenctl vm status [--dir STATE]
       wrenctl vm down [--dir STATE]
       wrenctl vm console [--dir STATE]     (a VM started with --debug; leave with Ctrl-])`

func vmCommand(g globals, args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, vmUsage)
		return exitUsage
	}
	switch args[0] {
	case "up":
		return vmUp(args[1:], os.Stdout, os.Stderr)
	case "status":
		return vmStatus(args[1:], os.Stdout, os.Stderr)
	case "down":
		return vmDown(args[1:], os.Stdout, os.Stderr)
	case "console":
		return vmConsole(args[1:], os.Stdin, os.Stdout, os.Stderr)
	case "_log":
		return vmLogPump(args[1:])
	}
	fmt.Fprintln(os.Stderr, vmUsage)
	return usageError(os.Stderr, "unknown vm command %q", args[0])
}

func vmFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("wrenctl vm "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", defaultVMDir(), "VM state directory (default $WREN_VM_DIR or /run/wren/vm)")
	return fs, dir
}

func parseVMFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		return usageError(stderr, "unexpected argument %q", fs.Arg(0)), false
	}
	return 0, true
}

func vmUp(args []string, stdout, stderr io.Writer) int {
	fs, dir := vmFlags("up", stderr)
	mem := fs.Int("memory", vm.DefaultMemoryMiB, "guest memory in MiB")
	cpus := fs.Int("cpus", vm.DefaultCPUs, "guest vCPUs")
	debug := fs.Bool("debug", false, "debug console on vsock 1026 (wrenctl vm console) and debug logging")
	shared := fs.String("shared-dir", "", "host directory shared as virtio-fs tag kataShared (default STATE/shared)")
	kernel := fs.String("kernel", "", "guest kernel (default out/vmlinux, else Debian's, fetched)")
	initrd := fs.String("initrd", "", "Wren initramfs (default out/wren-initramfs[-debug].cpio.gz, else built from wren-agent)")
	image := fs.String("image", "", "DAX image attached as an nvdimm (optional)")
	accel := fs.String("accel", os.Getenv("WREN_ACCEL"), "tcg, kvm or auto (probe KVM); default tcg")
	cid := fs.Uint("cid", vm.DefaultGuestCID, "guest vsock context ID (3 or above)")
	firmware := fs.String("firmware", os.Getenv("WREN_FIRMWARE"), "QEMU -bios: a path or seabios (default qboot when installed)")
	params := fs.String("kernel-params", "", "extra kernel command line words (e.g. agent.hotplug_timeout=10s)")
	timeout := fs.Duration("timeout", 3*time.Minute, "how long to wait for the agent")
	if code, ok := parseVMFlags(fs, args, stderr); !ok {
		return code
	}
	// Ctrl-C during the boot fails Start, which stops what it started (the
	// helpers run in their own sessions and do not see the signal).
	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(sigCtx, *timeout+time.Minute)
	defer cancel()
	k, ird, err := bootFiles(ctx, *kernel, *initrd, *dir, *debug, stderr)
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
		Dir: *dir, Kernel: k, Initrd: ird, SharedDir: *shared, Image: *image,
		MemoryMiB: *mem, CPUs: *cpus, GuestCID: uint32(*cid), Debug: *debug, Accel: *accel,
		KernelParams: strings.Fields(*params), Firmware: *firmware,
		Detach:       true,
		LogCollector: []string{exe, "vm", "_log", "--dir", abs},
		BootTimeout:  *timeout,
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

// bootFiles picks the kernel and initramfs: flags, then `make image`'s
// out/ files, then Debian's kernel with an initramfs built from the
// wren-agent binary next to wrenctl.
func bootFiles(ctx context.Context, kernel, initrd, dir string, debug bool, progress io.Writer) (string, string, error) {
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

func vmStatus(args []string, stdout, stderr io.Writer) int {
	fs, dir := vmFlags("status", stderr)
	if code, ok := parseVMFlags(fs, args, stderr); !ok {
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
	fs, dir := vmFlags("down", stderr)
	if code, ok := parseVMFlags(fs, args, stderr); !ok {
		return code
	}
	v, err := vm.Attach(*dir)
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
	fs, dir := vmFlags("_log", os.Stderr)
	if code, ok := parseVMFlags(fs, args, os.Stderr); !ok {
		return code
	}
	if err := vm.PumpLog(context.Background(), *dir); err != nil {
		fmt.Fprintf(os.Stderr, "wrenctl vm _log: %v\n", err)
		return exitError
	}
	return exitOK
}
