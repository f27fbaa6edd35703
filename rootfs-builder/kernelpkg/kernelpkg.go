// Package kernelpkg fetches Debian's guest kernel: it downloads the
// linux-image package that linux-image-amd64 depends on with
// `apt-get download`, unpacks it with `dpkg-deb -x` into a cache directory,
// and extracts an uncompressed ELF vmlinux from the bzImage, because QEMU
// boots an ELF vmlinux through PVH without firmware-side decompression (about
// 5 s faster per boot under TCG).
//
// Fetch is idempotent and safe to call from several processes at once (the
// cache is guarded by a file lock), so every test package can call it.
package kernelpkg

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
)

// DefaultDir is the cache directory used when neither Options.Dir nor
// $WREN_KERNEL_DIR is set.
const DefaultDir = "/var/cache/wren/kernel"

// MetaPackage is the Debian package whose dependency names the current
// kernel image package.
const MetaPackage = "linux-image-amd64"

// Kernel is an unpacked kernel package.
type Kernel struct {
	// Package is the Debian package name, e.g. linux-image-6.1.0-56-amd64.
	Package string
	// Version is the kernel release (uname -r), e.g. 6.1.0-56-amd64.
	Version string
	// Vmlinux is the uncompressed ELF kernel (boot it with QEMU -kernel).
	Vmlinux string
	// BzImage is the package's compressed kernel (/boot/vmlinuz-*).
	BzImage string
	// ModulesDir is /lib/modules/<Version> of the unpacked package.
	ModulesDir string
	// Config is the kernel's .config (/boot/config-*).
	Config string
}

// Options tune Fetch.
type Options struct {
	// Dir is the cache directory; default $WREN_KERNEL_DIR, else DefaultDir.
	Dir string
	// Package is the linux-image package to fetch; default: resolved from
	// MetaPackage with apt-cache, or the single cached kernel when apt's
	// lists are unavailable.
	Package string
	// Refresh asks apt which package is current even when a kernel is
	// cached; by default a single cached kernel is reused without asking,
	// which keeps repeated builds and tests fast and stable.
	Refresh bool
	// Progress receives one line per long step (nil: silent).
	Progress io.Writer
}

// CacheDir returns the directory Fetch uses for opts.
func CacheDir(opts Options) string {
	if opts.Dir != "" {
		return opts.Dir
	}
	if d := os.Getenv("WREN_KERNEL_DIR"); d != "" {
		return d
	}
	return DefaultDir
}

const doneMarker = ".complete"

// Fetch returns the cached kernel, downloading and unpacking it first if
// needed.
func Fetch(ctx context.Context, opts Options) (*Kernel, error) {
	dir := CacheDir(opts)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	pkg := opts.Package
	if pkg == "" && !opts.Refresh {
		pkg = singleCached(dir)
	}
	if pkg != "" {
		if err := checkPackage(pkg); err != nil {
			return nil, err
		}
		if k, err := load(pkg, filepath.Join(dir, pkg)); err == nil {
			return k, nil
		}
	}

	// Resolving may run apt-get update, and fetching writes the cache:
	// both happen under the lock, so concurrent callers (test packages run
	// in parallel) neither fight over apt's lock nor download twice.
	unlock, err := lock(ctx, filepath.Join(dir, ".lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	if pkg == "" && !opts.Refresh {
		pkg = singleCached(dir) // another process may have fetched meanwhile
	}
	if pkg == "" {
		if pkg, err = resolvePackage(ctx, dir); err != nil {
			return nil, err
		}
		if err := checkPackage(pkg); err != nil {
			return nil, err
		}
	}
	pkgDir := filepath.Join(dir, pkg)
	if k, err := load(pkg, pkgDir); err == nil {
		return k, nil
	}
	if err := fetchInto(ctx, pkg, dir, pkgDir, opts.Progress); err != nil {
		return nil, err
	}
	return load(pkg, pkgDir)
}

func checkPackage(pkg string) error {
	if !validPackage.MatchString(pkg) {
		return fmt.Errorf("kernel package name %q is not a linux-image package", pkg)
	}
	return nil
}

var validPackage = regexp.MustCompile(`^linux-image-[0-9][A-Za-z0-9.+~-]*$`)

// resolvePackage asks apt which linux-image-<ver> package MetaPackage
// depends on; without apt data it falls back to the only cached kernel.
func resolvePackage(ctx context.Context, dir string) (string, error) {
	pkg, err := aptDepends(ctx)
	if err != nil {
		// A fresh machine may have no package lists yet.
		if out, uerr := exec.CommandContext(ctx, "apt-get", "update", "-qq").CombinedOutput(); uerr == nil {
			pkg, err = aptDepends(ctx)
		} else {
			err = fmt.Errorf("%w; apt-get update: %v: %s", err, uerr, out)
		}
	}
	if err == nil {
		return pkg, nil
	}
	if pkg := singleCached(dir); pkg != "" {
		return pkg, nil
	}
	return "", fmt.Errorf("resolve kernel package from %s (apt-cache depends; run apt-get update, or set the package explicitly): %w", MetaPackage, err)
}

func aptDepends(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", MetaPackage).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends %s: %w", MetaPackage, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("no linux-image dependency of %s in apt-cache output:\n%s", MetaPackage, out)
}

// singleCached returns the package name of the only complete kernel in
// dir, or "" when there is none or more than one.
func singleCached(dir string) string {
	cached, _ := filepath.Glob(filepath.Join(dir, "linux-image-*", doneMarker))
	if len(cached) != 1 {
		return ""
	}
	return filepath.Base(filepath.Dir(cached[0]))
}

func load(pkg, pkgDir string) (*Kernel, error) {
	if _, err := os.Stat(filepath.Join(pkgDir, doneMarker)); err != nil {
		return nil, err
	}
	ver := strings.TrimPrefix(pkg, "linux-image-")
	ver = strings.TrimSuffix(ver, "-unsigned")
	k := &Kernel{
		Package:    pkg,
		Version:    ver,
		Vmlinux:    filepath.Join(pkgDir, "vmlinux"),
		BzImage:    filepath.Join(pkgDir, "boot", "vmlinuz-"+ver),
		ModulesDir: filepath.Join(pkgDir, "lib", "modules", ver),
		Config:     filepath.Join(pkgDir, "boot", "config-"+ver),
	}
	for _, p := range []string{k.Vmlinux, k.BzImage, k.ModulesDir} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("cached kernel %s incomplete: %w", pkgDir, err)
		}
	}
	return k, nil
}

func progress(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

func fetchInto(ctx context.Context, pkg, dir, pkgDir string, prog io.Writer) error {
	for _, tool := range []string{"apt-get", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("fetch kernel needs %s (Debian's apt and dpkg): %w", tool, err)
		}
	}
	// Work in a scratch directory and rename at the end, so a crash
	// leaves no half-unpacked tree that looks complete.
	tmp, err := os.MkdirTemp(dir, ".fetch-")
	if err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	defer os.RemoveAll(tmp)

	progress(prog, "kernel: apt-get download %s", pkg)
	dl := exec.CommandContext(ctx, "apt-get", "download", "-q", pkg)
	dl.Dir = tmp
	if out, err := dl.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s: %w\n%s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s: expected one .deb in %s, found %d", pkg, tmp, len(debs))
	}
	root := filepath.Join(tmp, "root")
	progress(prog, "kernel: dpkg-deb -x %s", filepath.Base(debs[0]))
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], root).CombinedOutput(); err != nil {
		return fmt.Errorf("dpkg-deb -x %s: %w\n%s", debs[0], err, out)
	}
	if err := os.Remove(debs[0]); err != nil {
		return err
	}
	bz, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(bz) != 1 {
		return fmt.Errorf("package %s: expected one /boot/vmlinuz-*, found %d", pkg, len(bz))
	}
	progress(prog, "kernel: extracting vmlinux from %s", filepath.Base(bz[0]))
	if err := ExtractVmlinuxFile(ctx, bz[0], filepath.Join(root, "vmlinux")); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, doneMarker), []byte(pkg+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.RemoveAll(pkgDir); err != nil {
		return err
	}
	if err := os.Rename(root, pkgDir); err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	progress(prog, "kernel: %s ready in %s", pkg, pkgDir)
	return nil
}

// lock takes an exclusive flock on path, giving up when ctx ends.
func lock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("kernel cache lock: %w", err)
	}
	var flockErr error
	done := make(chan struct{})
	go func() { flockErr = syscall.Flock(int(f.Fd()), syscall.LOCK_EX); close(done) }()
	select {
	case <-done:
		if flockErr != nil {
			f.Close()
			return nil, fmt.Errorf("kernel cache lock %s: %w", path, flockErr)
		}
		return func() { f.Close() }, nil
	case <-ctx.Done():
		// Closing the file releases the lock if the flock call wins later.
		go func() { <-done; f.Close() }()
		return nil, fmt.Errorf("kernel cache lock %s: %w", path, ctx.Err())
	}
}

// Errors of ExtractVmlinux.
var (
	ErrNotBzImage = errors.New("not a bzImage")
)
