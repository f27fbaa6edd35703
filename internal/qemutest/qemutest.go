// Package qemutest boots a guest under QEMU (TCG; this CI has no usable KVM)
// for tests: it starts qemu-system-x86_64 with a kernel, an initramfs and
// optional devices, collects the serial console, waits for console markers
// or for QEMU to exit, and always kills QEMU when the test ends.
package qemutest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Binary is the QEMU system emulator used.
const Binary = "qemu-system-x86_64"

// Require skips the test when QEMU is not installed.
func Require(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath(Binary); err != nil {
		t.Skipf("%s not installed (apt-get install qemu-system-x86): skipping VM test", Binary)
	}
}

// Config describes one guest.
type Config struct {
	Kernel string // ELF vmlinux (booted via PVH) or bzImage
	Initrd string
	Append string // kernel command line; console=ttyS0 is added
	MemMB  int    // default 512
	// Machine is the -machine value; default "q35,accel=tcg".
	Machine string
	// Mem is the -m value when it needs more than a size (slots, maxmem);
	// default "<MemMB>M".
	Mem  string
	Args []string // extra QEMU arguments (devices, objects)
}

// VM is a running guest.
type VM struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	mu      sync.Mutex
	console bytes.Buffer
	changed chan struct{} // closed and replaced on every console write or exit
	exited  bool
	waitErr error
	Started time.Time
}

// Start boots the guest. QEMU is killed when the test ends.
func Start(t testing.TB, c Config) *VM {
	t.Helper()
	Require(t)
	if c.MemMB == 0 {
		c.MemMB = 512
	}
	if c.Machine == "" {
		c.Machine = "q35,accel=tcg"
	}
	if c.Mem == "" {
		c.Mem = fmt.Sprintf("%dM", c.MemMB)
	}
	for _, f := range []string{c.Kernel, c.Initrd} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("qemutest: %v", err)
		}
	}
	args := []string{
		"-machine", c.Machine, "-cpu", "max", "-smp", "1", "-m", c.Mem,
		"-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
		"-serial", "stdio", "-monitor", "none", "-no-reboot",
		"-kernel", c.Kernel, "-initrd", c.Initrd,
		// panic=-1 reboots at once on a kernel panic; -no-reboot turns
		// that into a QEMU exit, so a dying init ends the test quickly.
		"-append", strings.TrimSpace("console=ttyS0 panic=-1 " + c.Append),
	}
	args = append(args, c.Args...)
	vm := &VM{changed: make(chan struct{})}
	vm.cmd = exec.Command(Binary, args...)
	vm.cmd.Stdout = (*consoleWriter)(vm)
	vm.cmd.Stderr = (*consoleWriter)(vm)
	stdin, err := vm.cmd.StdinPipe()
	if err != nil {
		t.Fatalf("qemutest: %v", err)
	}
	vm.stdin = stdin
	vm.Started = time.Now()
	if err := vm.cmd.Start(); err != nil {
		t.Fatalf("qemutest: start %s: %v", Binary, err)
	}
	go func() {
		err := vm.cmd.Wait()
		vm.mu.Lock()
		vm.exited, vm.waitErr = true, err
		close(vm.changed)
		vm.changed = make(chan struct{})
		vm.mu.Unlock()
	}()
	t.Cleanup(func() {
		vm.Kill()
		if t.Failed() {
			t.Logf("guest console:\n%s", vm.Console())
		}
	})
	return vm
}

type consoleWriter VM

func (w *consoleWriter) Write(p []byte) (int, error) {
	vm := (*VM)(w)
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.console.Write(p)
	close(vm.changed)
	vm.changed = make(chan struct{})
	return len(p), nil
}

// Send types s on the guest's serial console.
func (vm *VM) Send(s string) error {
	_, err := io.WriteString(vm.stdin, s)
	return err
}

// Console returns everything the guest printed so far (serial console and
// QEMU's own messages).
func (vm *VM) Console() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return strings.ReplaceAll(vm.console.String(), "\r\n", "\n")
}

// ErrExited is returned by WaitFor when QEMU exits before the marker shows.
var ErrExited = errors.New("qemu exited")

// WaitFor waits until the console holds a complete line containing marker
// and returns the time since Start.
func (vm *VM) WaitFor(ctx context.Context, marker string) (time.Duration, error) {
	return vm.wait(ctx, marker, true)
}

// WaitForText waits until the console contains text anywhere, such as a
// shell prompt that ends no line.
func (vm *VM) WaitForText(ctx context.Context, text string) (time.Duration, error) {
	return vm.wait(ctx, text, false)
}

func (vm *VM) wait(ctx context.Context, marker string, wholeLine bool) (time.Duration, error) {
	for {
		vm.mu.Lock()
		found := false
		if i := bytes.Index(vm.console.Bytes(), []byte(marker)); i >= 0 {
			found = !wholeLine || bytes.IndexByte(vm.console.Bytes()[i:], '\n') >= 0
		}
		exited, ch := vm.exited, vm.changed
		vm.mu.Unlock()
		if found {
			return time.Since(vm.Started), nil
		}
		if exited {
			return 0, fmt.Errorf("waiting for %q: %w", marker, ErrExited)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, fmt.Errorf("waiting for %q: %w", marker, ctx.Err())
		}
	}
}

// Wait waits for QEMU to exit by itself and returns its exit error.
func (vm *VM) Wait(ctx context.Context) error {
	for {
		vm.mu.Lock()
		exited, err, ch := vm.exited, vm.waitErr, vm.changed
		vm.mu.Unlock()
		if exited {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for qemu to exit: %w", ctx.Err())
		}
	}
}

// Kill stops QEMU if it still runs.
func (vm *VM) Kill() {
	vm.mu.Lock()
	exited := vm.exited
	vm.mu.Unlock()
	if !exited && vm.cmd.Process != nil {
		_ = vm.cmd.Process.Kill()
		_ = vm.Wait(context.Background())
	}
}
