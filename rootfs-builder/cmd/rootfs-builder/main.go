// Command rootfs-builder builds the guest's boot artifacts: the initramfs
// (the agent as /init plus the kernel modules it needs, if any), the Kata-layout
// DAX root image, and fetches Debian's kernel.
//
//	rootfs-builder initramfs --agent bin/wren-agent --kernel-modules DIR --out FILE [--profile debug] [--compress none]
//	rootfs-builder image     --agent bin/wren-agent --kernel-modules DIR --out FILE [--profile debug] [--align-mb 128]
//	rootfs-builder kernel    [--dir DIR] [--refresh]
//
// --kernel-modules may be "fetch": Debian's kernel is then downloaded (or
// taken from the cache) first. --kernel-config FILE (a kernel's .config,
// e.g. make kernel's out/config-wren) leaves out the modules that kernel has
// built in; with all of them built in, no --kernel-modules is needed.
// --compress none writes the initramfs as a plain cpio (the kernel copies
// it instead of inflating it). SOURCE_DATE_EPOCH sets every timestamp.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wren-vm/wren/rootfs-builder/image"
	"github.com/wren-vm/wren/rootfs-builder/initramfs"
	"github.com/wren-vm/wren/rootfs-builder/kernelpkg"
)

const usage = `usage:
  rootfs-builder initramfs --agent FILE --out FILE [--kernel-modules DIR|fetch] [--kernel-config FILE] [--compress gzip|none] [--profile debug] [--modules a,b] [--file GUEST=HOST]...
  rootfs-builder image     --agent FILE --out FILE [--kernel-modules DIR|fetch] [--kernel-config FILE] [--profile debug] [--modules a,b] [--file GUEST=HOST]... [--align-mb N]
  rootfs-builder kernel    [--dir DIR] [--refresh]    fetch Debian's kernel; prints its paths
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "rootfs-builder: %v\n", err)
		if errors.Is(err, errUsage) {
			fmt.Fprint(os.Stderr, usage)
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("bad usage")

type fileFlags map[string]string

func (f fileFlags) String() string { return fmt.Sprint(map[string]string(f)) }
func (f fileFlags) Set(v string) error {
	g, h, ok := strings.Cut(v, "=")
	if !ok || g == "" || h == "" {
		return fmt.Errorf("--file wants GUEST=HOST, got %q", v)
	}
	f[g] = h
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: no command", errUsage)
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "kernel":
		return runKernel(ctx, args, stdout, stderr)
	case "initramfs", "image":
		return runBuild(ctx, cmd, args, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
}

func runKernel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kernel", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "cache directory (default $WREN_KERNEL_DIR or "+kernelpkg.DefaultDir+")")
	refresh := fs.Bool("refresh", false, "ask apt for the current kernel package even when one is cached")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	k, err := kernelpkg.Fetch(ctx, kernelpkg.Options{Dir: *dir, Refresh: *refresh, Progress: stderr})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "package=%s\nversion=%s\nvmlinux=%s\nbzimage=%s\nmodules=%s\nconfig=%s\n",
		k.Package, k.Version, k.Vmlinux, k.BzImage, k.ModulesDir, k.Config)
	return nil
}

func runBuild(ctx context.Context, cmd string, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	agent := fs.String("agent", "", "static agent binary installed as /init (e.g. bin/wren-agent)")
	modDir := fs.String("kernel-modules", "", `unpacked /lib/modules/<version> directory, or "fetch" for Debian's kernel`)
	out := fs.String("out", "", "output file")
	profile := fs.String("profile", "", `"" or "debug" (adds busybox and its applet links)`)
	modules := fs.String("modules", "", "comma-separated module names (default: the agent's set)")
	kconfig := fs.String("kernel-config", "", "the kernel's .config (e.g. out/config-wren): modules it has built in are left out")
	busybox := fs.String("busybox", initramfs.DefaultBusybox, "static busybox for --profile debug")
	policy := fs.String("policy", "", "agent policy (Rego) installed as "+initramfs.PolicyPath+"; an agent built with the policy engine (make agent-policy) gets Kata's allow-all without it")
	compress := fs.String("compress", initramfs.CompressGzip, `initramfs: "gzip" or "none" (a plain cpio: larger, no inflating at boot)`)
	alignMB := fs.Int64("align-mb", image.DefaultAlign/image.MiB, "image: round the size up to this many MiB")
	files := fileFlags{}
	fs.Var(files, "file", "extra file GUEST=HOST (repeatable)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if *agent == "" || *out == "" {
		return fmt.Errorf("%w: --agent and --out are required", errUsage)
	}
	if _, err := os.Stat(*agent); err != nil {
		return fmt.Errorf("agent binary: %w (build it with `make agent`)", err)
	}
	mtime, err := sourceDateEpoch()
	if err != nil {
		return err
	}
	if *modDir == "fetch" {
		k, err := kernelpkg.Fetch(ctx, kernelpkg.Options{Progress: stderr})
		if err != nil {
			return err
		}
		*modDir = k.ModulesDir
	}
	opts := initramfs.Options{
		Init: *agent, ModulesDir: *modDir, Files: files, Profile: *profile,
		Busybox: *busybox, MTime: mtime, Policy: *policy, Progress: stderr, KernelConfig: *kconfig,
		Compression: *compress,
	}
	if *modules != "" {
		opts.Modules = strings.Split(*modules, ",")
	}
	start := time.Now()
	switch cmd {
	case "initramfs":
		if err := initramfs.BuildFile(*out, opts); err != nil {
			return err
		}
	case "image":
		tree, err := initramfs.Archive(opts)
		if err != nil {
			return err
		}
		if err := image.Build(ctx, image.Options{Tree: tree, Out: *out, Align: *alignMB * image.MiB, MTime: mtime, Progress: stderr}); err != nil {
			return err
		}
	}
	st, err := os.Stat(*out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "%s: wrote %s (%d bytes) in %s\n", cmd, *out, st.Size(), time.Since(start).Round(time.Millisecond))
	return nil
}

// sourceDateEpoch reads SOURCE_DATE_EPOCH (reproducible-builds.org); 0 when
// unset.
func sourceDateEpoch() (uint32, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", v, err)
	}
	return uint32(n), nil
}
