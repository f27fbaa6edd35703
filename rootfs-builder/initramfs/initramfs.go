// Package initramfs builds the guest's initramfs: a newc cpio (gzip'd, or
// uncompressed on request) holding a static init (the agent, or a test program) as /init, the
// kernel modules it needs with their dependencies and the module load list
// (agent/kmodload reads it at boot) unless the kernel has them built in
// (Options.KernelConfig), and, in the debug profile, busybox
// with its applet links. Output is byte-reproducible: the same inputs give
// the same bytes.
package initramfs

import (
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/wren-vm/wren/lib/kmod"
	"github.com/wren-vm/wren/rootfs-builder/cpio"
	"github.com/wren-vm/wren/rootfs-builder/internal/outfile"
)

// DefaultModules are the modules the agent's guest needs from a modular
// kernel such as Debian's: virtio over PCI and MMIO, vsock over virtio,
// virtio-fs/FUSE, virtio-blk, virtio-scsi with the SCSI disk driver,
// virtio-net/console, nvdimm with pmem and fs-dax (nfit, nd_pmem,
// dax_pmem), ext4 for the DAX image with the crc32c its checksums need, and
// overlay. Their dependencies are added from .modinfo; names built into the
// kernel are skipped.
//
// vsock_loopback is left out on purpose, and so is every other local vsock
// transport: with one, any process of the guest, a container too, could
// connect to the agent's vsock ports (see ForbiddenModules).
var DefaultModules = []string{
	"virtio_pci", "virtio_mmio",
	"vmw_vsock_virtio_transport",
	"virtiofs", "fuse",
	"virtio_blk", "virtio_scsi", "sd_mod", "virtio_net", "virtio_console",
	"nfit", "nd_pmem", "dax_pmem",
	"crc32c_generic", "ext4",
	"overlay",
}

// ForbiddenModules never go into a guest image, even when asked for: they
// give the guest a local vsock transport, through which a container could
// reach the agent's API (AF_VSOCK is not network-namespaced).
var ForbiddenModules = []string{"vsock_loopback"}

// Profiles.
const (
	ProfileDefault = ""
	ProfileDebug   = "debug"
)

// DefaultBusybox is the statically linked busybox of Debian's busybox-static.
const DefaultBusybox = "/bin/busybox"

// Options describe an initramfs.
type Options struct {
	// Init is the host path of the static binary installed as /init.
	Init string
	// ModulesDir is an unpacked /lib/modules/<version> directory; empty
	// means no modules (a kernel with everything built in).
	ModulesDir string
	// Modules names the modules to include and load; nil means
	// DefaultModules (when ModulesDir or KernelConfig is set).
	Modules []string
	// KernelConfig is the kernel's .config (e.g. out/config-wren beside
	// make kernel's vmlinux-wren). When set, modules the kernel has built
	// in are left out; when that is all of them the image has no module
	// files, no load list and needs no ModulesDir.
	KernelConfig string
	// ModulesBuiltin is the kernel's modules.builtin (make kernel's
	// out/modules.builtin-wren), installed as
	// /lib/modules/<KernelRelease>/modules.builtin when there is no
	// ModulesDir: with it the agent tells a module the kernel has built in
	// (a CreateSandbox kernel_modules entry that needs nothing) from one
	// the kernel lacks (NotFound).
	ModulesBuiltin, KernelRelease string
	// Files maps guest paths to host files copied in (mode 0644, or 0755
	// when the host file is executable).
	Files map[string]string
	// Profile is ProfileDefault or ProfileDebug (adds busybox and its
	// applet links, e.g. /bin/sh).
	Profile string
	// Busybox is the static busybox for the debug profile; default
	// DefaultBusybox.
	Busybox string
	// MTime is every entry's modification time (e.g. SOURCE_DATE_EPOCH).
	MTime uint32
	// Policy is the host path of the agent policy (Rego) installed as
	// PolicyPath, for an agent built with the policy engine (make
	// agent-policy); "" installs Kata's allow-all policy for such an
	// agent. An agent without the engine takes no policy.
	Policy string
	// Compression is CompressGzip (the default when empty) or
	// CompressNone.
	Compression string
	// Progress receives one line per step (nil: silent).
	Progress io.Writer
}

// Compressions of the archive.
const (
	// CompressGzip is what every kernel with an initramfs unpacks.
	CompressGzip = "gzip"
	// CompressNone leaves the cpio as is: the kernel then copies instead of
	// inflating it, which under TCG is most of the unpacking time, and the
	// host loads the larger file with one read.
	CompressNone = "none"
)

// Build writes the cpio described by opts to w, compressed as
// opts.Compression asks.
func Build(w io.Writer, opts Options) error {
	a, err := Archive(opts)
	if err != nil {
		return err
	}
	progress(opts.Progress, "initramfs: writing %d entries", len(a.Names()))
	if opts.Compression == CompressNone {
		_, err := a.WriteTo(w)
		return err
	}
	// A fixed gzip header (no name, zero mtime, fixed OS byte) keeps the
	// compressed bytes reproducible too.
	zw, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
	if err != nil {
		return err
	}
	zw.OS = 3 // Unix
	if _, err := a.WriteTo(zw); err != nil {
		return err
	}
	return zw.Close()
}

// BuildFile writes the initramfs to path atomically (temp file + rename),
// leaving path alone when it already holds the same bytes.
func BuildFile(path string, opts Options) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-")
	if err != nil {
		return fmt.Errorf("initramfs output: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := Build(tmp, opts); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	_, err = outfile.Commit(tmp.Name(), path)
	return err
}

func progress(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// Archive returns the uncompressed archive Build would write.
func Archive(opts Options) (*cpio.Archive, error) {
	if err := checkOptions(opts); err != nil {
		return nil, err
	}
	a := cpio.NewArchive()
	a.MTime = opts.MTime
	if err := addSkeleton(a, opts.Init); err != nil {
		return nil, err
	}
	if err := addModules(a, opts); err != nil {
		return nil, err
	}
	if err := addExtraFiles(a, opts.Files); err != nil {
		return nil, err
	}
	if err := addPolicy(a, opts); err != nil {
		return nil, err
	}
	if opts.Profile == ProfileDebug {
		if err := addBusybox(a, opts); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// checkOptions refuses options Archive cannot build from before it adds
// anything.
func checkOptions(opts Options) error {
	if opts.Init == "" {
		return errors.New("initramfs: no init binary given")
	}
	if err := checkStaticELF(opts.Init); err != nil {
		return fmt.Errorf("initramfs: init %s: %w", opts.Init, err)
	}
	if opts.Profile != ProfileDefault && opts.Profile != ProfileDebug {
		return fmt.Errorf("initramfs: unknown profile %q (want %q or %q)", opts.Profile, ProfileDefault, ProfileDebug)
	}
	switch opts.Compression {
	case "", CompressGzip, CompressNone:
	default:
		return fmt.Errorf("initramfs: unknown compression %q (want %q or %q)", opts.Compression, CompressGzip, CompressNone)
	}
	return nil
}

// add gives the failure to add an entry, if any, the package's prefix.
func add(err error) error {
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return nil
}

// addSkeleton adds the directories every guest has, the device nodes /init
// starts with, init itself as /init (and /sbin/init) and an empty
// /etc/resolv.conf.
func addSkeleton(a *cpio.Archive, initPath string) error {
	for _, d := range []struct {
		p    string
		perm uint32
	}{
		{"/bin", 0o755}, {"/dev", 0o755}, {"/etc", 0o755}, {"/etc/wren", 0o755}, {"/lib", 0o755},
		{"/mnt", 0o755}, {"/proc", 0o555}, {"/root", 0o700}, {"/run", 0o755}, {"/sbin", 0o755},
		{"/sys", 0o555}, {"/tmp", 0o1777}, {"/usr", 0o755}, {"/usr/bin", 0o755}, {"/usr/sbin", 0o755},
		{"/var", 0o755},
	} {
		if err := add(a.Dir(d.p, d.perm)); err != nil {
			return err
		}
	}
	// The console and null nodes let the kernel give /init its stdio
	// before devtmpfs is mounted.
	if err := add(a.CharDev("/dev/console", 0o600, 5, 1)); err != nil {
		return err
	}
	if err := add(a.CharDev("/dev/null", 0o666, 1, 3)); err != nil {
		return err
	}
	if err := add(a.HostFile("/init", 0o755, initPath)); err != nil {
		return err
	}
	if err := add(a.Symlink("/sbin/init", "../init")); err != nil {
		return err
	}
	// The agent bind-mounts the sandbox's resolv.conf over this file.
	if err := add(a.File("/etc/resolv.conf", 0o644, nil)); err != nil {
		return err
	}
	return nil
}

// addModules adds the requested kernel modules with their dependencies and
// the load list naming them in load order. With nothing to load (no modules
// directory and no modules asked for, or a kernel with all of them built
// in) there is no list: the agent then loads nothing.
func addModules(a *cpio.Archive, opts Options) error {
	if opts.Modules == nil && (opts.ModulesDir != "" || opts.KernelConfig != "") {
		opts.Modules = DefaultModules
	}
	if opts.KernelConfig != "" {
		names, err := modulesNotBuiltin(opts.KernelConfig, opts.Modules, opts.Progress)
		if err != nil {
			return err
		}
		opts.Modules = names
	}
	if opts.ModulesBuiltin != "" && opts.ModulesDir == "" {
		if opts.KernelRelease == "" || strings.Contains(opts.KernelRelease, "/") {
			return fmt.Errorf("initramfs: modules.builtin needs the kernel release (uname -r), got %q", opts.KernelRelease)
		}
		if err := add(a.HostFile(path.Join("/lib/modules", opts.KernelRelease, "modules.builtin"), 0o644, opts.ModulesBuiltin)); err != nil {
			return err
		}
	}
	if len(opts.Modules) == 0 {
		return nil
	}
	if opts.ModulesDir == "" {
		return fmt.Errorf("initramfs: modules %v requested but no kernel modules directory given", opts.Modules)
	}
	var list strings.Builder
	list.WriteString("# Kernel modules in load order, written by rootfs-builder.\n")
	if err := addModuleFiles(a, opts, &list); err != nil {
		return err
	}
	return add(a.File(kmod.ListPath, 0o644, []byte(list.String())))
}

// addModuleFiles resolves the requested modules in opts.ModulesDir, adds
// each with its dependencies, and writes their guest paths to list in load
// order.
func addModuleFiles(a *cpio.Archive, opts Options, list *strings.Builder) error {
	names := opts.Modules
	progress(opts.Progress, "initramfs: resolving %d modules in %s", len(names), opts.ModulesDir)
	ix, err := kmod.Scan(opts.ModulesDir)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	mods, err := ix.Resolve(names)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := refuseForbidden(ix, mods); err != nil {
		return err
	}
	base := "/lib/modules/" + filepath.Base(filepath.Clean(opts.ModulesDir))
	for _, m := range mods {
		data, err := m.Contents()
		if err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
		guest := path.Join(base, filepath.ToSlash(m.InstallPath()))
		if err := add(a.File(guest, 0o644, data)); err != nil {
			return err
		}
		list.WriteString(guest + "\n")
	}
	// modules.builtin lets the guest tell a built-in module from a
	// missing one when loading by name (kmodload.LoadByName).
	if b := filepath.Join(opts.ModulesDir, "modules.builtin"); fileExists(b) {
		if err := add(a.HostFile(path.Join(base, "modules.builtin"), 0o644, b)); err != nil {
			return err
		}
	}
	progress(opts.Progress, "initramfs: %d modules (with dependencies)", len(mods))
	return nil
}

// addExtraFiles copies in Options.Files, sorted by guest path so the archive
// does not depend on map order.
func addExtraFiles(a *cpio.Archive, files map[string]string) error {
	guests := make([]string, 0, len(files))
	for g := range files {
		guests = append(guests, g)
	}
	sort.Strings(guests)
	for _, g := range guests {
		host := files[g]
		st, err := os.Stat(host)
		if err != nil {
			return fmt.Errorf("initramfs: extra file for %s: %w", g, err)
		}
		perm := uint32(0o644)
		if st.Mode()&0o111 != 0 {
			perm = 0o755
		}
		if err := add(a.HostFile(g, perm, host)); err != nil {
			return err
		}
	}
	return nil
}

// addBusybox installs busybox as /bin/busybox and links every applet it
// reports (busybox --list-full) that does not clash with an existing entry.
func addBusybox(a *cpio.Archive, opts Options) error {
	bb := opts.Busybox
	if bb == "" {
		bb = DefaultBusybox
	}
	if err := checkStaticELF(bb); err != nil {
		return fmt.Errorf("initramfs: debug profile needs a static busybox at %s (apt-get install busybox-static): %w", bb, err)
	}
	out, err := exec.Command(bb, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("initramfs: %s --list-full: %w", bb, err)
	}
	if err := a.HostFile("/bin/busybox", 0o755, bb); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	n := 0
	for _, applet := range strings.Fields(string(out)) {
		guest := "/" + applet
		if a.Has(guest) || path.Base(guest) == "linuxrc" {
			continue
		}
		rel, err := filepath.Rel(path.Dir(guest), "/bin/busybox")
		if err != nil {
			return err
		}
		if err := a.Symlink(guest, rel); err != nil {
			return fmt.Errorf("initramfs: applet %s: %w", applet, err)
		}
		n++
	}
	progress(opts.Progress, "initramfs: busybox with %d applet links", n)
	return nil
}

// checkStaticELF rejects a missing file, a non-ELF file, and a dynamically
// linked ELF: the initramfs has no libc or loader for it.
func checkStaticELF(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return err
		}
		return fmt.Errorf("not an ELF executable: %w", err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return errors.New("dynamically linked (needs a static binary: CGO_ENABLED=0, or -ldflags '-extldflags -static')")
		}
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("ELF type %v is not an executable", f.Type)
	}
	return nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// refuseForbidden fails when the modules to install, their dependencies
// included, or the kernel's built-in modules hold one of ForbiddenModules.
func refuseForbidden(ix *kmod.Index, mods []*kmod.Module) error {
	for _, f := range ForbiddenModules {
		if ix.Builtin(f) {
			return fmt.Errorf("initramfs: the kernel has %s built in: containers could reach the agent through it; use a kernel without it", f)
		}
		for _, m := range mods {
			if m.Name == f {
				return fmt.Errorf("initramfs: module %s is refused: it lets containers reach the agent's vsock ports", f)
			}
		}
	}
	return nil
}
