// Package vmtest boots a throwaway QEMU (TCG) guest wired to wren-vsockd, for
// the backend's integration tests and benchmarks: Debian's own kernel (from
// the linux-image-amd64 package, fetched with apt-get download and cached),
// and an initramfs whose /init is ./guestinit, which loads the virtio and
// vsock modules and serves test ports.
//
// The initramfs is assembled here by a minimal newc writer: the project's
// rootfs-builder packages had not landed when this was written.
package vmtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
)

// Modules the guest loads, in dependency order (Debian builds them all as
// modules).
var guestModules = []string{
	"drivers/virtio/virtio_ring.ko",
	"drivers/virtio/virtio.ko",
	"drivers/virtio/virtio_pci_legacy_dev.ko",
	"drivers/virtio/virtio_pci_modern_dev.ko",
	"drivers/virtio/virtio_pci.ko",
	"net/vmw_vsock/vsock.ko",
	"net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
	"net/vmw_vsock/vmw_vsock_virtio_transport.ko",
}

// Kernel is an extracted Debian kernel package.
type Kernel struct {
	Image   string // vmlinuz
	Modules string // lib/modules/<version>/kernel
}

var kernelMu sync.Mutex

// FetchKernel downloads (once; cached under cacheDir) the kernel package that
// linux-image-amd64 depends on and extracts it.
func FetchKernel(ctx context.Context, cacheDir string) (Kernel, error) {
	kernelMu.Lock()
	defer kernelMu.Unlock()
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		return Kernel{}, fmt.Errorf("apt-cache depends linux-image-amd64: %w", err)
	}
	var pkg string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
			pkg = f[1]
			break
		}
	}
	if pkg == "" {
		return Kernel{}, fmt.Errorf("no kernel package in %q", out)
	}
	version := strings.TrimPrefix(pkg, "linux-image-")
	dir := filepath.Join(cacheDir, pkg)
	k := Kernel{
		Image:   filepath.Join(dir, "boot", "vmlinuz-"+version),
		Modules: filepath.Join(dir, "lib", "modules", version, "kernel"),
	}
	if _, err := os.Stat(k.Image); err == nil {
		return k, nil
	}
	dl, err := os.MkdirTemp(cacheDir, "download-")
	if err != nil {
		return Kernel{}, err
	}
	defer os.RemoveAll(dl)
	cmd := exec.CommandContext(ctx, "apt-get", "download", pkg)
	cmd.Dir = dl
	if out, err := cmd.CombinedOutput(); err != nil {
		return Kernel{}, fmt.Errorf("apt-get download %s: %w: %s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dl, "*.deb"))
	if len(debs) != 1 {
		return Kernel{}, fmt.Errorf("apt-get download %s left %d .deb files", pkg, len(debs))
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", debs[0], tmp).CombinedOutput(); err != nil {
		return Kernel{}, fmt.Errorf("dpkg-deb -x: %w: %s", err, out)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return Kernel{}, err
	}
	return k, nil
}

// BuildInitramfs builds guestinit and writes an initramfs with it as /init
// and the vsock modules from k into dir.
func BuildInitramfs(ctx context.Context, k Kernel, dir string) (string, error) {
	initBin := filepath.Join(dir, "guestinit")
	_, self, _, _ := runtime.Caller(0)
	pkgDir := filepath.Join(filepath.Dir(self), "guestinit")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.CommandContext(ctx, gobin, "build", "-trimpath", "-ldflags=-s -w", "-o", initBin, ".")
	cmd.Dir = pkgDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build guestinit: %w: %s", err, out)
	}
	var w newcWriter
	w.dir("dev")
	w.node("dev/console", 0o020600, 5, 1)
	w.dir("proc")
	w.dir("sys")
	w.dir("modules")
	data, err := os.ReadFile(initBin)
	if err != nil {
		return "", err
	}
	w.file("init", 0o755, data)
	var order []string
	for _, m := range guestModules {
		data, err := os.ReadFile(filepath.Join(k.Modules, m))
		if err != nil {
			return "", fmt.Errorf("module: %w", err)
		}
		name := filepath.Base(m)
		w.file("modules/"+name, 0o644, data)
		order = append(order, name)
	}
	w.file("modules/order", 0o644, []byte(strings.Join(order, "\n")+"\n"))
	w.trailer()
	path := filepath.Join(dir, "initramfs.cpio")
	return path, os.WriteFile(path, w.buf.Bytes(), 0o644)
}

// newcWriter writes a cpio "newc" archive, the format the kernel unpacks.
type newcWriter struct {
	buf bytes.Buffer
	ino uint32
}

func (w *newcWriter) entry(name string, mode, rmaj, rmin uint32, data []byte) {
	w.ino++
	nlink := uint32(1)
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	fmt.Fprintf(&w.buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		w.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmaj, rmin, len(name)+1, 0)
	w.buf.WriteString(name)
	w.buf.WriteByte(0)
	w.pad()
	w.buf.Write(data)
	w.pad()
}

func (w *newcWriter) pad() {
	for w.buf.Len()%4 != 0 {
		w.buf.WriteByte(0)
	}
}

func (w *newcWriter) dir(name string) { w.entry(name, 0o040755, 0, 0, nil) }
func (w *newcWriter) file(name string, perm uint32, data []byte) {
	w.entry(name, 0o100000|perm, 0, 0, data)
}
func (w *newcWriter) node(name string, mode, maj, min uint32) { w.entry(name, mode, maj, min, nil) }
func (w *newcWriter) trailer()                                { w.entry("TRAILER!!!", 0, 0, 0, nil) }

// VM is a running QEMU guest.
type VM struct {
	cmd     *exec.Cmd
	console *consoleBuf
	done    chan struct{}
	waitErr error
}

// consoleBuf collects the guest console and wakes waiters on new output.
type consoleBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
	ch  chan struct{}
}

func (c *consoleBuf) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	close(c.ch)
	c.ch = make(chan struct{})
	return len(p), nil
}

func (c *consoleBuf) snapshot() (string, chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String(), c.ch
}

// BootOptions configure Boot.
type BootOptions struct {
	Kernel      Kernel
	Initramfs   string
	VhostSocket string
	MemoryMiB   int
}

// Boot starts QEMU. The vhost-user socket must already be listening.
func Boot(o BootOptions) (*VM, error) {
	if o.MemoryMiB == 0 {
		o.MemoryMiB = 256
	}
	mem := fmt.Sprintf("%dM", o.MemoryMiB)
	args := []string{
		"-machine", "q35,accel=tcg,memory-backend=mem",
		"-cpu", "max",
		"-smp", "1",
		"-m", mem,
		"-object", "memory-backend-memfd,id=mem,size=" + mem + ",share=on",
		"-kernel", o.Kernel.Image,
		"-initrd", o.Initramfs,
		"-append", "console=ttyS0 panic=-1 quiet",
		"-chardev", "socket,id=vsock0,path=" + o.VhostSocket,
		"-device", "vhost-user-vsock-pci,chardev=vsock0",
		"-nodefaults", "-nographic", "-no-reboot",
		"-serial", "stdio",
		"-monitor", "none",
	}
	vm := &VM{console: &consoleBuf{ch: make(chan struct{})}, done: make(chan struct{})}
	vm.cmd = exec.Command("qemu-system-x86_64", args...)
	vm.cmd.Stdout = vm.console
	vm.cmd.Stderr = vm.console
	vm.cmd.Stdin = nil
	if err := vm.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	go func() {
		vm.waitErr = vm.cmd.Wait()
		close(vm.done)
	}()
	return vm, nil
}

// WaitConsole waits until the console shows want (or the VM dies).
func (vm *VM) WaitConsole(ctx context.Context, want string) error {
	for {
		s, ch := vm.console.snapshot()
		if strings.Contains(s, want) {
			return nil
		}
		if strings.Contains(s, "GUEST FAILED") {
			return fmt.Errorf("guest failed:\n%s", s)
		}
		select {
		case <-ch:
		case <-vm.done:
			s, _ := vm.console.snapshot()
			return fmt.Errorf("qemu exited (%v) before %q:\n%s", vm.waitErr, want, s)
		case <-ctx.Done():
			return fmt.Errorf("waiting for %q: %w:\n%s", want, ctx.Err(), s)
		}
	}
}

// Console returns the console output so far.
func (vm *VM) Console() string { s, _ := vm.console.snapshot(); return s }

// Kill stops QEMU at once and waits for it to exit.
func (vm *VM) Kill() {
	_ = vm.cmd.Process.Kill()
	<-vm.done
}

// Done is closed when QEMU has exited.
func (vm *VM) Done() <-chan struct{} { return vm.done }

var _ io.Writer = (*consoleBuf)(nil)

// WaitFor polls f every interval until it succeeds or ctx ends.
func WaitFor(ctx context.Context, interval time.Duration, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(interval):
		}
	}
}
