// Package vm launches one pod VM the way a Kata shim does with QEMU: direct
// boot of a kernel and the Wren initramfs (the agent as /init), guest RAM as
// a shared memfd so vhost-user backends can map it, wren-vsockd for vsock
// (hybrid vsock on STATE/vsock.sock), virtiofsd sharing a host directory as
// tag kataShared, optionally a DAX image as an nvdimm, the serial console in
// STATE/console.log and a QMP socket for hotplug.
//
// QEMU runs under TCG unless told otherwise: /dev/kvm exists on the CI
// machines but nested KVM hangs there, so KVM is used only when asked for
// (Config.Accel "kvm") or when a short probe boot proves it works ("auto").
//
// Every helper process is recorded in STATE/vm.json with its pid and start
// time, so another process (wrenctl vm down) can stop a VM it did not start.
// Stop kills QEMU, virtiofsd and wren-vsockd and removes their files.
package vm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/lib/fsremove"
)

// Guest vsock ports of the agent (Kata's defaults).
const (
	AgentPort        = 1024
	LogPort          = 1025
	DebugConsolePort = 1026
	// PassfdPort is where the agent accepts the host connections that
	// become a process's stdio (wrenctl run --passfd).
	PassfdPort = 1027
)

// Defaults.
const (
	DefaultMemoryMiB = 512
	DefaultCPUs      = 1
	DefaultGuestCID  = 3
	DefaultVirtiofsd = "/usr/lib/qemu/virtiofsd"
	DefaultQEMU      = "qemu-system-x86_64"
	DefaultFirmware  = "/usr/share/qemu/qboot.rom"
	// SharedTag is the virtio-fs tag a Kata shim gives the sandbox share.
	SharedTag = "kataShared"
	// HotplugPorts is how many empty PCIe root ports the machine gets for
	// hotplugged devices (q35 cannot hotplug onto its root bus).
	HotplugPorts = 4
	// hotplugSlot0 is the root-bus slot of the first hotplug port; the
	// PCI path of a device behind port i is "<hotplugSlot0+i>/00".
	hotplugSlot0 = 0x10
)

// File names inside the state directory.
const (
	stateFile      = "vm.json"
	vhostSockFile  = "vhost-vsock.sock"
	hvsockFile     = "vsock.sock"
	virtiofsSock   = "virtiofs.sock"
	qmpSockFile    = "qmp.sock"
	consoleFile    = "console.log"
	agentLogFile   = "agent.log"
	qemuLogFile    = "qemu.log"
	vsockdLogFile  = "vsockd.log"
	virtiofsLogFil = "virtiofsd.log"
)

// Config describes a pod VM.
type Config struct {
	// Dir is the state directory (sockets, logs, vm.json); created.
	Dir string
	// Kernel is an ELF vmlinux (PVH boot) or bzImage (an arm64 Image on
	// arm64); Initrd the Wren initramfs with the agent as /init.
	Kernel, Initrd string
	// Arch is the guest's architecture: ArchX86_64 (default) or ArchARM64
	// (QEMU's virt machine under TCG; see arch.go).
	Arch string
	// SharedDir is shared with the guest as virtio-fs tag kataShared;
	// default Dir/shared.
	SharedDir string
	// Image is an optional DAX image attached read-only as an nvdimm
	// (the guest sees /dev/pmem0, partition /dev/pmem0p1).
	Image string
	// RootImage, instead of Initrd, is a DAX root image (rootfs-builder
	// image, the agent as /init) the guest boots from, as Kata's image
	// mode does: a read-only nvdimm mounted -o dax as /, so the agent's
	// pages are the host's page cache, shared by every VM that maps the
	// file, not guest RAM. The kernel needs nvdimm, pmem and ext4 built in
	// (Wren's kernel; x86_64 only). Not combined with Image.
	RootImage string

	MemoryMiB int    // default 512
	CPUs      int    // default 1
	GuestCID  uint32 // default 3
	// Debug enables the agent's debug console on vsock DebugConsolePort
	// and debug logging.
	Debug bool
	// Accel is "tcg" (default), "kvm", or "auto" (probe KVM, else TCG).
	Accel string
	// Firmware is QEMU's -bios: a path, "seabios" for QEMU's default, or
	// empty for $WREN_FIRMWARE, else qboot when installed. qboot
	// (/usr/share/qemu/qboot.rom, qemu-system-data) reaches the kernel about
	// 1.5-2 s sooner than SeaBIOS under TCG on the CI machines; hotplug and
	// the nvdimm (ACPI tables from QEMU) work the same.
	Firmware string
	// KernelParams are appended to the kernel command line.
	KernelParams []string
	// NoLogPort leaves the agent's log on the serial console instead of
	// vsock LogPort.
	NoLogPort bool

	// Binaries; empty means the default or a search (see FindBinary).
	QEMU, Vsockd, Virtiofsd string

	// Detach starts the helpers in their own sessions so they outlive the
	// calling process; otherwise they are killed when it dies.
	Detach bool
	// LogCollector is the command line of a detached process that copies
	// the agent's log stream into STATE/agent.log (one that calls
	// PumpLog); without it a detached VM logs to the serial console.
	LogCollector []string
	// BootTimeout bounds Start's wait for the agent; default 2 minutes.
	BootTimeout time.Duration
	// Progress receives one line per step; nil is silent.
	Progress io.Writer
}

// State is what vm.json records about a running VM.
type State struct {
	Dir       string    `json:"dir"`
	Addr      string    `json:"addr"`
	SharedDir string    `json:"shared_dir"`
	QMP       string    `json:"qmp"`
	Console   string    `json:"console"`
	AgentLog  string    `json:"agent_log,omitempty"`
	Debug     bool      `json:"debug"`
	Accel     string    `json:"accel"`
	GuestCID  uint32    `json:"guest_cid"`
	Started   time.Time `json:"started"`
	// BootMS is the time from QEMU's start to the agent's first
	// Health.Check answer.
	BootMS float64 `json:"boot_ms,omitempty"`
	Procs  []*Proc `json:"procs"`
	// OwnsShared is true when the shared directory was made by Start and
	// is removed by Stop.
	OwnsShared bool `json:"owns_shared"`
	// Template is the template directory of a clone (StartClone).
	Template string `json:"template,omitempty"`
}

// VM is a running pod VM.
type VM struct {
	State
	// Booted is how long the agent took to answer its first Health.Check
	// after QEMU started.
	Booted time.Duration

	mu          sync.Mutex
	stopped     bool
	hotplugUsed map[int]string // hotplug port -> device id
	logDone     chan struct{}
	logClose    func()
}

// Addr returns the agent's address, hvsock://DIR/vsock.sock:1024.
func (v *VM) Addr() string { return v.State.Addr }

// HybridVsock returns the path of the hybrid vsock socket.
func (v *VM) HybridVsock() string { return filepath.Join(v.Dir, hvsockFile) }

func (v *VM) proc(name string) *Proc {
	for _, p := range v.Procs {
		if p.Name == name {
			return p
		}
	}
	return nil
}

func (c *Config) progress(format string, a ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, format+"\n", a...)
	}
}

// newVM is a VM in cfg's state directory, with the paths every VM kind
// (cold boot, template, clone) keeps there; nothing is started yet.
func newVM(cfg *Config) *VM {
	return &VM{State: State{
		Dir:       cfg.Dir,
		Addr:      fmt.Sprintf("hvsock://%s:%d", filepath.Join(cfg.Dir, hvsockFile), AgentPort),
		SharedDir: cfg.SharedDir,
		QMP:       filepath.Join(cfg.Dir, qmpSockFile),
		Console:   filepath.Join(cfg.Dir, consoleFile),
		GuestCID:  cfg.GuestCID,
	}}
}

// Start launches the VM and waits until the agent answers Health.Check.
// On any failure everything it started is stopped again.
func Start(ctx context.Context, cfg Config) (_ *VM, err error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	v := newVM(&cfg)
	v.Debug = cfg.Debug
	if err := v.prepareStateDir(&cfg); err != nil {
		return nil, err
	}
	defer func() {
		if err == nil {
			return
		}
		if serr := v.Stop(); serr != nil {
			err = fmt.Errorf("%w (stopping what had started: %v)", err, serr)
		}
	}()

	accel, err := chooseAccel(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	v.Accel, cfg.Accel = accel, accel

	if err := v.startBackends(ctx, &cfg); err != nil {
		return nil, err
	}
	if err := v.startQEMU(&cfg, accel); err != nil {
		return nil, err
	}
	if err := v.startLogCollector(ctx, &cfg); err != nil {
		return nil, err
	}
	if err := v.waitBoot(ctx, &cfg); err != nil {
		return nil, err
	}
	return v, nil
}

// prepareStateDir creates the state directory, ends what a previous VM in it
// left running and removes its sockets, and creates the shared directory when
// it is missing (the VM then owns it).
func (v *VM) prepareStateDir(cfg *Config) error {
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if old, err := Attach(cfg.Dir); err == nil {
		if old.Running() {
			return fmt.Errorf("a VM already runs in %s (wrenctl vm down --dir %s)", cfg.Dir, cfg.Dir)
		}
		// QEMU is gone (the guest powered off): end what it left running.
		if err := old.Stop(); err != nil {
			return fmt.Errorf("clean up the previous VM in %s: %w", cfg.Dir, err)
		}
	}
	for _, f := range []string{vhostSockFile, hvsockFile, virtiofsSock, qmpSockFile, stateFile} {
		os.Remove(filepath.Join(cfg.Dir, f))
	}
	if _, err := os.Stat(cfg.SharedDir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(cfg.SharedDir, 0o755); err != nil {
			return fmt.Errorf("shared dir: %w", err)
		}
		v.OwnsShared = true
	}
	return nil
}

// startBackends starts wren-vsockd and virtiofsd and waits until both listen.
func (v *VM) startBackends(ctx context.Context, cfg *Config) error {
	cfg.progress("vm: starting wren-vsockd (guest CID %d)", cfg.GuestCID)
	vsockd, err := startProc("wren-vsockd", cfg.Vsockd, []string{
		"--socket", filepath.Join(cfg.Dir, vhostSockFile),
		"--uds-path", v.HybridVsock(),
		"--guest-cid", strconv.FormatUint(uint64(cfg.GuestCID), 10),
	}, filepath.Join(cfg.Dir, vsockdLogFile), cfg.Detach)
	if err != nil {
		return err
	}
	v.Procs = append(v.Procs, vsockd)
	if err := v.save(); err != nil {
		return err
	}

	cfg.progress("vm: starting virtiofsd sharing %s as %s", cfg.SharedDir, SharedTag)
	vfs, err := startProc("virtiofsd", cfg.Virtiofsd, []string{
		"--socket-path=" + filepath.Join(cfg.Dir, virtiofsSock),
		"-o", "source=" + cfg.SharedDir,
		"-o", "cache=auto",
		// The default namespace sandbox needs unprivileged user
		// namespaces nothing here requires; chroot is enough for a
		// directory this harness made.
		"-o", "sandbox=chroot",
		"-o", "xattr",
	}, filepath.Join(cfg.Dir, virtiofsLogFil), cfg.Detach)
	if err != nil {
		return err
	}
	v.Procs = append(v.Procs, vfs)
	if err := v.save(); err != nil {
		return err
	}
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Both backends are connected to once by QEMU, which never retries.
	if err := waitListening(waitCtx, vsockd, filepath.Join(cfg.Dir, vhostSockFile)); err != nil {
		return withLog(err, filepath.Join(cfg.Dir, vsockdLogFile))
	}
	if err := waitListening(waitCtx, vfs, filepath.Join(cfg.Dir, virtiofsSock)); err != nil {
		return withLog(err, filepath.Join(cfg.Dir, virtiofsLogFil))
	}
	return nil
}

// startQEMU boots the guest; the boot time counts from here.
func (v *VM) startQEMU(cfg *Config, accel string) error {
	cfg.progress("vm: starting QEMU (%s, %d MiB, %d vCPU)", accel, cfg.MemoryMiB, cfg.CPUs)
	os.Remove(v.Console)
	os.Remove(filepath.Join(cfg.Dir, agentLogFile))
	return v.runQEMU(cfg, qemuArgs(cfg, accel), cfg.Detach)
}

// runQEMU starts QEMU with args, counting the VM's start from now, and
// records it in the state file so that Stop finds it.
func (v *VM) runQEMU(cfg *Config, args []string, detach bool) error {
	v.Started = time.Now()
	qemu, err := startProc("qemu", cfg.QEMU, args, filepath.Join(cfg.Dir, qemuLogFile), detach)
	if err != nil {
		return err
	}
	v.Procs = append(v.Procs, qemu)
	return v.save()
}

// startLogCollector copies the agent's log stream into STATE/agent.log when
// the agent logs to vsock: from a detached process for a detached VM (so the
// log outlives this one), else from a goroutine.
func (v *VM) startLogCollector(ctx context.Context, cfg *Config) error {
	if cfg.logPort() {
		v.AgentLog = filepath.Join(cfg.Dir, agentLogFile)
		if cfg.Detach {
			p, err := startProc("log", cfg.LogCollector[0], cfg.LogCollector[1:], filepath.Join(cfg.Dir, "log-collector.log"), true)
			if err != nil {
				return err
			}
			v.Procs = append(v.Procs, p)
			if err := v.save(); err != nil {
				return err
			}
		} else {
			v.collectLog(ctx)
		}
	}
	return nil
}

// waitBoot waits for the agent's first answer and records the boot time.
func (v *VM) waitBoot(ctx context.Context, cfg *Config) error {
	cfg.progress("vm: waiting for the agent at %s", v.Addr())
	bootCtx, cancelBoot := context.WithTimeout(ctx, cfg.BootTimeout)
	defer cancelBoot()
	if err := v.waitAgent(bootCtx); err != nil {
		return fmt.Errorf("%w\n%s", err, v.diagnostics())
	}
	v.Booted = time.Since(v.Started)
	v.BootMS = float64(v.Booted.Microseconds()) / 1000
	if err := v.save(); err != nil {
		return err
	}
	cfg.progress("vm: agent answered after %v", v.Booted.Round(time.Millisecond))
	return nil
}

// fill completes the configuration with its defaults and checks that the
// files and programs it names exist.
func (c *Config) fill() error {
	if err := c.fillDirs(); err != nil {
		return err
	}
	if err := c.fillMachine(); err != nil {
		return err
	}
	if err := c.fillArch(); err != nil {
		return err
	}
	c.fillFirmware()
	if err := c.checkImages(); err != nil {
		return err
	}
	return c.findBinaries()
}

// fillDirs makes the state and shared directories absolute, the shared
// one by default in the state directory.
func (c *Config) fillDirs() error {
	if c.Dir == "" {
		return errors.New("vm: no state directory")
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return err
	}
	c.Dir = dir
	if c.SharedDir == "" {
		c.SharedDir = filepath.Join(c.Dir, "shared")
	}
	if c.SharedDir, err = filepath.Abs(c.SharedDir); err != nil {
		return err
	}
	return nil
}

// fillMachine defaults memory, CPUs, guest CID, boot timeout and
// accelerator.
func (c *Config) fillMachine() error {
	if c.MemoryMiB == 0 {
		c.MemoryMiB = DefaultMemoryMiB
	}
	if c.CPUs == 0 {
		c.CPUs = DefaultCPUs
	}
	if c.GuestCID == 0 {
		c.GuestCID = DefaultGuestCID
	}
	if c.GuestCID < 3 {
		return fmt.Errorf("vm: guest CID %d is reserved (use 3 or above)", c.GuestCID)
	}
	if c.BootTimeout == 0 {
		c.BootTimeout = 2 * time.Minute
	}
	if c.Accel == "" {
		c.Accel = os.Getenv("WREN_ACCEL")
	}
	return nil
}

// fillFirmware picks the firmware: the configured one, $WREN_FIRMWARE,
// else DefaultFirmware when it exists; "seabios" means QEMU's own.
func (c *Config) fillFirmware() {
	if c.Firmware == "" {
		c.Firmware = os.Getenv("WREN_FIRMWARE")
	}
	if c.Firmware == "" {
		if _, err := os.Stat(DefaultFirmware); err == nil {
			c.Firmware = DefaultFirmware
		}
	}
	if c.Firmware == "seabios" {
		c.Firmware = ""
	}
}

// checkImages checks that the kernel, the initramfs or the root image, and
// the DAX image, if any, exist.
func (c *Config) checkImages() error {
	boot := struct{ what, path string }{"initramfs", c.Initrd}
	if c.RootImage != "" {
		if c.Initrd != "" {
			return errors.New("vm: an initramfs and a DAX root image given: the guest boots from one of them")
		}
		if c.Image != "" {
			// Both would be nvdimms, and /dev/pmem0 must be the root.
			return errors.New("vm: a DAX image beside a DAX root image is not supported")
		}
		boot = struct{ what, path string }{"DAX root image", c.RootImage}
	}
	for _, f := range []struct{ what, path string }{{"kernel", c.Kernel}, boot} {
		if f.path == "" {
			return fmt.Errorf("vm: no %s given (make image builds out/vmlinux and out/wren-initramfs.cpio.gz)", f.what)
		}
		if _, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("vm: %s: %w", f.what, err)
		}
	}
	if c.Image != "" {
		if _, err := os.Stat(c.Image); err != nil {
			return fmt.Errorf("vm: DAX image: %w", err)
		}
	}
	return nil
}

// findBinaries resolves QEMU, wren-vsockd and virtiofsd (FindBinary).
func (c *Config) findBinaries() error {
	bins := []struct {
		p                 *string
		name, def, pkgMsg string
	}{
		{&c.QEMU, DefaultQEMU, DefaultQEMU, "apt-get install qemu-system-x86, or qemu-system-arm for arm64"},
		{&c.Vsockd, "wren-vsockd", "wren-vsockd", "make tools"},
		{&c.Virtiofsd, "virtiofsd", DefaultVirtiofsd, "apt-get install qemu-system-common"},
	}
	for _, b := range bins {
		if *b.p == "" {
			*b.p = b.def
		}
		p, err := FindBinary(*b.p)
		if err != nil {
			return fmt.Errorf("vm: %s not found (%s): %w", b.name, b.pkgMsg, err)
		}
		*b.p = p
	}
	return nil
}

// FindBinary resolves a program: a path as is, else $WREN_BIN, the
// directory of the running executable, then $PATH.
func FindBinary(name string) (string, error) {
	if strings.ContainsRune(name, '/') {
		if _, err := os.Stat(name); err != nil {
			return "", err
		}
		return name, nil
	}
	var dirs []string
	if d := os.Getenv("WREN_BIN"); d != "" {
		dirs = append(dirs, d)
	}
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Dir(exe))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return exec.LookPath(name)
}

// logPort reports whether the agent logs to vsock LogPort, which needs a
// reader on the host.
func (c *Config) logPort() bool {
	return !c.NoLogPort && (!c.Detach || len(c.LogCollector) > 0)
}

// KernelCmdline is the command line the guest boots with.
func KernelCmdline(cfg *Config) string {
	params := []string{
		"console=" + consoleDevice(cfg),
		// A kernel panic reboots at once and -no-reboot turns that into a
		// QEMU exit: a dead guest never hangs a test.
		"panic=-1", "reboot=k",
		// The loop driver makes 8 devices at boot unless told otherwise
		// (20-40 ms under TCG); loop-control still makes them on demand.
		"loop.max_loop=0",
		"agent.server_addr=vsock://-1:" + strconv.Itoa(AgentPort),
		"agent.passfd_listener_port=" + strconv.Itoa(PassfdPort),
	}
	if cfg.logPort() {
		params = append(params, "agent.log_vport="+strconv.Itoa(LogPort))
	}
	if cfg.Arch != ArchARM64 {
		// Kata's: keep the SMP lock prefixes rather than rewrite every one
		// of them at boot for a single CPU (60-80 ms under TCG).
		params = append(params, "noreplace-smp")
		// Kata's too: the kernel's check that the timer interrupt arrives
		// counts ticks over a short busy wait, and a vCPU the host does not
		// run for that long fails it and panics ("IO-APIC + timer doesn't
		// work", seen once under make test's load).
		params = append(params, "no_timer_check")
		if cfg.Accel == "" || cfg.Accel == "tcg" {
			// TCG has no TSC-deadline timer, so the kernel would count
			// local APIC ticks for 100 ms to calibrate that timer; the
			// HPET ticks instead (docs/perf/boot.md).
			params = append(params, "noapictimer")
			// TCG drops the code it translated for a guest page only when
			// a vCPU writes to the page; virtiofsd writes file data into
			// the shared guest RAM behind its back, so a program read from
			// the share into a page that held other code could run that
			// code's translations. Zeroing every new page (Debian's kernel
			// does by default, Wren's does not) is such a write. arm64's
			// zeroing does not help there (docs/pod-vm.md, "arm64").
			params = append(params, "init_on_alloc=1")
		}
	}
	if cfg.RootImage != "" {
		// Kata's image mode: the nvdimm's partition, read-only, with DAX.
		params = append(params, "root=/dev/pmem0p1", "rootfstype=ext4", "rootflags=dax", "ro", "init=/init")
	}
	if cfg.Debug {
		params = append(params, "agent.log=debug", "agent.debug_console",
			"agent.debug_console_vport="+strconv.Itoa(DebugConsolePort))
	} else {
		// As Kata boots its guests: the kernel's messages below warning
		// stay in its ring buffer instead of crossing the emulated serial
		// port one byte at a time (docs/perf/boot.md).
		params = append(params, "quiet")
	}
	return strings.Join(append(params, cfg.KernelParams...), " ")
}

func qemuArgs(cfg *Config, accel string) []string {
	if cfg.Arch == ArchARM64 {
		return qemuArgsARM64(cfg, accel)
	}
	mem := fmt.Sprintf("%dM", cfg.MemoryMiB)
	machine := "q35,accel=" + accel + ",memory-backend=ram"
	memArg := mem
	nvdimm := cfg.Image
	if cfg.RootImage != "" {
		nvdimm = cfg.RootImage
	}
	if nvdimm != "" {
		machine += ",nvdimm=on"
		memArg = fmt.Sprintf("size=%s,slots=2,maxmem=%dM", mem, cfg.MemoryMiB+imageSlotMiB(nvdimm))
	}
	cpu := "max"
	if accel == "kvm" {
		cpu = "host"
	}
	args := []string{
		"-name", "wren-" + filepath.Base(cfg.Dir),
		"-machine", machine, "-cpu", cpu, "-smp", strconv.Itoa(cfg.CPUs), "-m", memArg,
		"-object", "memory-backend-memfd,id=ram,size=" + mem + ",share=on",
		"-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
	}
	args = append(args, podArgs(cfg)...)
	if cfg.Firmware != "" {
		args = append(args, "-bios", cfg.Firmware)
	}
	args = append(args, hotplugPortArgs()...)
	if nvdimm != "" {
		args = append(args,
			"-object", fmt.Sprintf("memory-backend-file,id=image,mem-path=%s,size=%dM,readonly=on,share=on", nvdimm, imageSlotMiB(nvdimm)),
			"-device", "nvdimm,id=nv0,memdev=image,unarmed=on")
	}
	return args
}

// podArgs are the arguments both architectures share: the console, QMP,
// the direct kernel boot, and the vsock and virtio-fs devices on the root
// bus.
func podArgs(cfg *Config) []string {
	args := []string{
		"-no-reboot",
		"-serial", "file:" + filepath.Join(cfg.Dir, consoleFile),
		"-qmp", "unix:" + filepath.Join(cfg.Dir, qmpSockFile) + ",server=on,wait=off",
		"-kernel", cfg.Kernel,
	}
	if cfg.Initrd != "" {
		args = append(args, "-initrd", cfg.Initrd)
	}
	return append(args,
		"-append", KernelCmdline(cfg),
		"-chardev", "socket,id=vsock,path="+filepath.Join(cfg.Dir, vhostSockFile),
		"-device", "vhost-user-vsock-pci,chardev=vsock,id=vsock0",
		"-chardev", "socket,id=virtiofs,path="+filepath.Join(cfg.Dir, virtiofsSock),
		"-device", "vhost-user-fs-pci,chardev=virtiofs,tag="+SharedTag+",queue-size=1024,id=virtiofs0",
	)
}

// hotplugPortArgs are the PCIe root ports devices are hot-plugged into.
func hotplugPortArgs() []string {
	var args []string
	for i := 0; i < HotplugPorts; i++ {
		args = append(args, "-device", fmt.Sprintf("pcie-root-port,id=hp%d,bus=pcie.0,chassis=%d,addr=0x%x", i, i+1, hotplugSlot0+i))
	}
	return args
}

// imageSlotMiB is the image size in whole MiB, the size of the nvdimm's
// memory slot (the image builder rounds images to 128 MiB, the DAX root
// image to 2 MiB).
func imageSlotMiB(path string) int {
	st, err := os.Stat(path)
	if err != nil {
		return 128
	}
	return int((st.Size() + (1<<20 - 1)) >> 20)
}

// waitAgent retries Health.Check until it answers SERVING, QEMU exits or
// ctx ends.
func (v *VM) waitAgent(ctx context.Context) error {
	qemu := v.proc("qemu")
	var last error
	for {
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		last = v.checkOnce(attempt)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-qemu.Exited():
			return fmt.Errorf("QEMU exited before the agent answered (last error: %v)", last)
		case <-ctx.Done():
			return fmt.Errorf("agent did not answer at %s: %w (last error: %v)", v.Addr(), ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Check calls Health.Check once.
func (v *VM) Check(ctx context.Context) error { return v.checkOnce(ctx) }

func (v *VM) checkOnce(ctx context.Context) error {
	c, err := client.Dial(ctx, v.Addr())
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := c.Health.Check(ctx, healthRequest())
	if err != nil {
		return err
	}
	if s := resp.GetStatus().String(); s != "SERVING" {
		return fmt.Errorf("health status %s", s)
	}
	return nil
}

// diagnostics is what a failed boot reports: the console tail and the
// helpers' logs.
func (v *VM) diagnostics() string {
	var b strings.Builder
	fmt.Fprintf(&b, "--- console tail (%s)\n%s", v.Console, Tail(v.Console, 40))
	for _, f := range []string{qemuLogFile, vsockdLogFile, virtiofsLogFil} {
		if t := Tail(filepath.Join(v.Dir, f), 10); strings.TrimSpace(t) != "" {
			fmt.Fprintf(&b, "--- %s\n%s", f, t)
		}
	}
	return b.String()
}

func withLog(err error, path string) error {
	return fmt.Errorf("%w\n--- %s\n%s", err, path, Tail(path, 20))
}

// Tail returns the last n lines of a file ("" when it cannot be read).
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "")
}

// ConsoleText returns the serial console so far.
func (v *VM) ConsoleText() string {
	b, _ := os.ReadFile(v.Console)
	return strings.ReplaceAll(string(b), "\r\n", "\n")
}

// QMPDial connects to the VM's QMP socket.
func (v *VM) QMPDial(ctx context.Context) (*QMP, error) { return DialQMP(ctx, v.QMP) }

func (v *VM) save() error {
	b, err := json.MarshalIndent(&v.State, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(v.Dir, stateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return os.Rename(tmp, filepath.Join(v.Dir, stateFile))
}

// Attach loads the VM recorded in dir (started by this or another process).
func Attach(dir string) (*VM, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, fmt.Errorf("no VM in %s: %w", dir, err)
	}
	v := &VM{}
	if err := json.Unmarshal(b, &v.State); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
	}
	return v, nil
}

// Running reports whether QEMU still runs.
func (v *VM) Running() bool {
	q := v.proc("qemu")
	return q != nil && q.Running()
}

// Exited returns a channel closed when QEMU has exited (for example after
// the agent powered the guest off on DestroySandbox).
func (v *VM) Exited() <-chan struct{} {
	if q := v.proc("qemu"); q != nil {
		return q.Exited()
	}
	ch := make(chan struct{})
	close(ch)
	return ch
}

// Wait waits for QEMU to exit by itself.
func (v *VM) Wait(ctx context.Context) error {
	select {
	case <-v.Exited():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for QEMU to exit: %w", ctx.Err())
	}
}

// VirtiofsdPidDir is where QEMU's virtiofsd (the C one of Debian
// bookworm's qemu-system-common) keeps a pid file per socket, named after
// the socket's path with '/' as '.'. It never removes the file: one per VM
// directory ever booted piled up there.
var VirtiofsdPidDir = "/run/virtiofsd"

// VirtiofsdPidFile is the pid file virtiofsd writes for socket path sock.
func VirtiofsdPidFile(sock string) string {
	return filepath.Join(VirtiofsdPidDir, strings.ReplaceAll(sock, "/", ".")+".pid")
}

// removeVirtiofsdPidFile removes the pid file of the stopped virtiofsd pid
// on sock, unless another virtiofsd has taken the socket path since.
func removeVirtiofsdPidFile(sock string, pid int) {
	f := VirtiofsdPidFile(sock)
	b, err := os.ReadFile(f)
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(pid) {
		return
	}
	os.Remove(f)
}

// Stop ends QEMU, virtiofsd and wren-vsockd (in that order) and removes
// their sockets, virtiofsd's pid file and the state file; logs are kept.
// It is safe to call more than once.
func (v *VM) Stop() error {
	v.mu.Lock()
	if v.stopped {
		v.mu.Unlock()
		return nil
	}
	v.stopped = true
	v.mu.Unlock()
	var errs []error
	for _, name := range []string{"qemu", "log", "virtiofsd", "wren-vsockd"} {
		if p := v.proc(name); p != nil {
			if err := p.Stop(5 * time.Second); err != nil {
				errs = append(errs, err)
			} else if name == "virtiofsd" {
				removeVirtiofsdPidFile(filepath.Join(v.Dir, virtiofsSock), p.PID)
			}
		}
	}
	if v.logClose != nil {
		v.logClose()
		<-v.logDone
	}
	for _, f := range []string{vhostSockFile, hvsockFile, virtiofsSock, qmpSockFile, stateFile} {
		if err := os.Remove(filepath.Join(v.Dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	// wren-vsockd may have made guest-initiated sockets (UDS_PORT).
	if m, _ := filepath.Glob(v.HybridVsock() + "_*"); len(m) > 0 {
		for _, f := range m {
			os.Remove(f)
		}
	}
	if v.OwnsShared {
		if err := fsremove.All(v.SharedDir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
