package vm

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/wren-vm/wren/rootfs-builder/image"
	"github.com/wren-vm/wren/rootfs-builder/initramfs"
)

// Kernels BuildArtifactsFor can boot.
const (
	// KernelDebian is Debian's generic kernel (fetched by kernelpkg), with
	// the agent's modules in the initramfs; x86_64 only.
	KernelDebian = "debian"
	// KernelWren is make kernel's guest kernel from guest-kernel-config,
	// everything built in: the initramfs has no modules.
	KernelWren = "wren"
)

// WrenKernel is make kernel's output for one architecture.
type WrenKernel struct {
	Kernel  string // out/vmlinux-wren (x86_64) or out/Image-wren-arm64
	Config  string // the .config beside it
	Builtin string // its modules.builtin, beside it
	Release string // its uname -r
}

// wrenKernelFiles are make kernel's file names in out/ per architecture.
var wrenKernelFiles = map[string][2]string{
	ArchX86_64: {"vmlinux-wren", "config-wren"},
	ArchARM64:  {"Image-wren-arm64", "config-wren-arm64"},
}

// FindWrenKernel finds make kernel's kernel for arch in $WREN_OUT, else in
// out/ of the working directory or of the nearest directory above it that
// has a go.mod (so tests, which run in their package's directory, find the
// repository's out/).
func FindWrenKernel(arch string) (*WrenKernel, error) {
	if arch == "" {
		arch = ArchX86_64
	}
	names, ok := wrenKernelFiles[arch]
	if !ok {
		return nil, fmt.Errorf("vm: no guest kernel for architecture %q", arch)
	}
	dir, err := outDir()
	if err != nil {
		return nil, err
	}
	k, err := WrenKernelAt(filepath.Join(dir, names[0]))
	if err != nil {
		return nil, fmt.Errorf("vm: Wren's %s guest kernel: %w (make kernel builds it, or copies it from its cache)", arch, err)
	}
	return k, nil
}

// ConfigBeside is where make kernel puts the .config of the kernel at
// path: config-X beside vmlinux-X, bzImage-X or Image-X; "" for a kernel
// named otherwise.
func ConfigBeside(path string) string { return beside(path, "config-") }

// beside names make kernel's file with prefix for the kernel at path.
func beside(path, prefix string) string {
	base := filepath.Base(path)
	for _, p := range []string{"vmlinux-", "bzImage-", "Image-"} {
		if rest, ok := strings.CutPrefix(base, p); ok && rest != "" {
			return filepath.Join(filepath.Dir(path), prefix+rest)
		}
	}
	return ""
}

// WrenKernelAt describes the make kernel kernel at path, with its .config
// beside it (ConfigBeside).
func WrenKernelAt(path string) (*WrenKernel, error) {
	k := &WrenKernel{Kernel: path, Config: ConfigBeside(path), Builtin: beside(path, "modules.builtin-")}
	if k.Config == "" {
		return nil, fmt.Errorf("%s is not named like make kernel's output (vmlinux-wren, Image-wren-arm64)", path)
	}
	for _, f := range []string{k.Kernel, k.Config, k.Builtin} {
		if _, err := os.Stat(f); err != nil {
			return nil, err
		}
	}
	var err error
	if k.Release, err = KernelRelease(k.Kernel); err != nil {
		return nil, err
	}
	return k, nil
}

// outDir is $WREN_OUT, else the out/ directory of the working directory or
// of the module root above it.
func outDir() (string, error) {
	if d := os.Getenv("WREN_OUT"); d != "" {
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, "out"), nil
		}
		if filepath.Dir(d) == d {
			return filepath.Join(wd, "out"), nil
		}
	}
}

// KernelRelease reads a kernel's release (what uname -r prints) from the
// "Linux version" banner in an uncompressed kernel image: an ELF vmlinux
// or an arm64 Image.
func KernelRelease(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("kernel release: %w", err)
	}
	const banner = "Linux version "
	i := bytes.Index(b, []byte(banner))
	if i < 0 {
		return "", fmt.Errorf("kernel release: no %q banner in %s (a compressed image?)", banner, path)
	}
	rest := b[i+len(banner):]
	end := bytes.IndexAny(rest, " \x00\n")
	if end <= 0 {
		return "", fmt.Errorf("kernel release: malformed banner in %s", path)
	}
	return string(rest[:end]), nil
}

// ArtifactOptions describe the boot files BuildArtifactsFor makes.
type ArtifactOptions struct {
	Agent string // static wren-agent for the guest's architecture
	Dir   string // where the initramfs is written
	Debug bool   // the debug profile (busybox; x86_64 only)
	// Kernel is KernelDebian (the default) or KernelWren.
	Kernel string
	// KernelFile, with KernelWren, is the kernel to use instead of the
	// one in out/ (its .config beside it, see ConfigBeside).
	KernelFile string
	// Arch is ArchX86_64 (default) or ArchARM64 (KernelWren only).
	Arch string
	// RootImage, with KernelWren on x86_64, builds a DAX root image
	// (Config.RootImage) instead of the initramfs.
	RootImage bool
	Progress  io.Writer
}

// BuildArtifactsFor picks the kernel o asks for and builds the initramfs
// it needs: with Debian's modules for Debian's kernel, none for Wren's.
func BuildArtifactsFor(ctx context.Context, o ArtifactOptions) (*Artifacts, error) {
	if o.Arch == "" {
		o.Arch = ArchX86_64
	}
	switch o.Kernel {
	case "", KernelDebian:
		if o.Arch != ArchX86_64 {
			return nil, fmt.Errorf("vm: Debian's kernel is fetched for x86_64 only; use Wren's kernel (make kernel) on %s", o.Arch)
		}
		return BuildArtifacts(ctx, o.Agent, o.Dir, o.Debug, o.Progress)
	case KernelWren:
	default:
		return nil, fmt.Errorf("vm: kernel %q: want %s or %s", o.Kernel, KernelDebian, KernelWren)
	}
	if o.Debug && o.Arch != ArchX86_64 {
		return nil, errors.New("vm: the debug initramfs (busybox) is built for x86_64 only")
	}
	if err := checkMachine(o.Agent, o.Arch); err != nil {
		return nil, err
	}
	var k *WrenKernel
	var err error
	if o.KernelFile != "" {
		k, err = WrenKernelAt(o.KernelFile)
	} else {
		k, err = FindWrenKernel(o.Arch)
	}
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	// Wren's kernel gets its initramfs uncompressed: inflating it is most
	// of the kernel's unpacking time under TCG (docs/perf/boot.md).
	opts := initramfs.Options{
		Init: o.Agent, KernelConfig: k.Config, ModulesBuiltin: k.Builtin, KernelRelease: k.Release,
		Compression: initramfs.CompressNone, Progress: o.Progress,
	}
	name := "wren-initramfs-" + o.Arch
	if o.Debug {
		opts.Profile = initramfs.ProfileDebug
		name += "-debug"
	}
	a := &Artifacts{Kernel: k.Kernel, KernelVersion: k.Release, Debug: o.Debug}
	if o.RootImage {
		if a.RootImage, err = buildRootImage(ctx, o, opts); err != nil {
			return nil, err
		}
		return a, nil
	}
	a.Initrd = filepath.Join(o.Dir, name+".cpio")
	if err := initramfs.BuildFile(a.Initrd, opts); err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	return a, nil
}

// rootImageAlign is what a DAX root image's size is rounded up to.
const rootImageAlign = 2 * image.MiB

// buildRootImage writes the initramfs's tree as a DAX root image
// (wren-root-<arch>[-debug].img) into o.Dir.
func buildRootImage(ctx context.Context, o ArtifactOptions, opts initramfs.Options) (string, error) {
	if o.Arch != ArchX86_64 {
		return "", fmt.Errorf("vm: a DAX root image is an nvdimm, which the %s pod VM has not", o.Arch)
	}
	tree, err := initramfs.Archive(opts)
	if err != nil {
		return "", fmt.Errorf("root image: %w", err)
	}
	name := "wren-root-" + o.Arch
	if o.Debug {
		name += "-debug"
	}
	out := filepath.Join(o.Dir, name+".img")
	// Rounded to 2 MiB, not Kata's 128: Linux maps device memory in 2 MiB
	// subsections (since 5.3), and every 128 MiB of nvdimm costs the guest
	// 2 MiB of struct pages and their set-up at boot.
	if err := image.Build(ctx, image.Options{Tree: tree, Out: out, Align: rootImageAlign, Progress: o.Progress}); err != nil {
		return "", fmt.Errorf("root image: %w", err)
	}
	return out, nil
}

// checkMachine fails when the ELF binary at path is not built for arch: the
// guest kernel would refuse to run it as /init (ENOEXEC) and panic.
func checkMachine(path, arch string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("vm: agent %s: %w", path, err)
	}
	defer f.Close()
	want := map[string]elf.Machine{ArchX86_64: elf.EM_X86_64, ArchARM64: elf.EM_AARCH64}[arch]
	if f.Machine != want {
		return fmt.Errorf("vm: agent %s is built for %v, the guest is %s (make agent-arm64 builds bin/wren-agent-arm64)", path, f.Machine, arch)
	}
	return nil
}
