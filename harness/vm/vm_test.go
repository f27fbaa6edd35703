package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wren-vm/wren/internal/testroot"
	"github.com/wren-vm/wren/rootfs-builder/kernelpkg"
)

func TestKernelCmdline(t *testing.T) {
	c := &Config{}
	got := KernelCmdline(c)
	for _, want := range []string{"console=ttyS0", "panic=-1", "agent.server_addr=vsock://-1:1024", "agent.log_vport=1025", "agent.passfd_listener_port=1027"} {
		if !strings.Contains(got, want) {
			t.Errorf("cmdline %q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "debug_console") {
		t.Errorf("debug console without Debug: %q", got)
	}
	c = &Config{Debug: true, KernelParams: []string{"agent.hotplug_timeout=10"}}
	got = KernelCmdline(c)
	for _, want := range []string{"agent.debug_console ", "agent.debug_console_vport=1026", "agent.log=debug", "agent.hotplug_timeout=10"} {
		if !strings.Contains(got+" ", want) {
			t.Errorf("debug cmdline %q lacks %q", got, want)
		}
	}
	// A detached VM without a log collector has nobody to read vsock 1025:
	// the log stays on the console.
	if got := KernelCmdline(&Config{Detach: true}); strings.Contains(got, "log_vport") {
		t.Errorf("detached cmdline without collector asks for a log port: %q", got)
	}
	if got := KernelCmdline(&Config{Detach: true, LogCollector: []string{"x"}}); !strings.Contains(got, "agent.log_vport=1025") {
		t.Errorf("detached cmdline with collector lacks the log port: %q", got)
	}
}

// The boot-time words: x86 keeps its SMP lock prefixes, TCG (no TSC-deadline
// timer) skips the local APIC timer, x86 under TCG zeroes every new page
// (translated code goes stale under virtiofsd's writes otherwise), no loop
// devices are made up front, and
// arm64 gets none of the x86 words (the kernel would hand them to the agent
// as arguments).
func TestKernelCmdlineBootWords(t *testing.T) {
	words := func(c *Config) map[string]bool {
		m := map[string]bool{}
		for _, w := range strings.Fields(KernelCmdline(c)) {
			m[w] = true
		}
		return m
	}
	for _, c := range []struct {
		cfg       Config
		has, lack []string
	}{
		{Config{}, []string{"noreplace-smp", "noapictimer", "loop.max_loop=0", "init_on_alloc=1", "quiet"}, []string{"root=/dev/pmem0p1"}},
		{Config{Debug: true}, []string{"agent.log=debug"}, []string{"quiet"}},
		{Config{Accel: "tcg"}, []string{"noreplace-smp", "noapictimer", "init_on_alloc=1"}, nil},
		{Config{Accel: "kvm"}, []string{"noreplace-smp", "no_timer_check"}, []string{"noapictimer", "init_on_alloc=1"}},
		{Config{Arch: ArchARM64}, []string{"console=ttyAMA0", "loop.max_loop=0"}, []string{"noreplace-smp", "no_timer_check", "noapictimer", "init_on_alloc=1"}},
		{Config{RootImage: "/r.img"}, []string{"root=/dev/pmem0p1", "rootfstype=ext4", "rootflags=dax", "ro", "init=/init"}, nil},
	} {
		got := words(&c.cfg)
		for _, w := range c.has {
			if !got[w] {
				t.Errorf("%+v: cmdline lacks %q: %q", c.cfg, w, KernelCmdline(&c.cfg))
			}
		}
		for _, w := range c.lack {
			if got[w] {
				t.Errorf("%+v: cmdline has %q: %q", c.cfg, w, KernelCmdline(&c.cfg))
			}
		}
	}
}

func TestQEMUArgs(t *testing.T) {
	dir := t.TempDir()
	c := &Config{Dir: dir, Kernel: "/k", Initrd: "/i", MemoryMiB: 256, CPUs: 2}
	args := strings.Join(qemuArgs(c, "tcg"), " ")
	for _, want := range []string{
		"-machine q35,accel=tcg,memory-backend=ram ",
		"memory-backend-memfd,id=ram,size=256M,share=on",
		"-smp 2",
		"vhost-user-vsock-pci,chardev=vsock",
		"socket,id=vsock,path=" + filepath.Join(dir, vhostSockFile),
		"vhost-user-fs-pci,chardev=virtiofs,tag=kataShared",
		"pcie-root-port,id=hp0,bus=pcie.0,chassis=1,addr=0x10",
		"-no-reboot",
		"-serial file:" + filepath.Join(dir, consoleFile),
		"-qmp unix:" + filepath.Join(dir, qmpSockFile) + ",server=on,wait=off",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("QEMU args lack %q:\n%s", want, args)
		}
	}
	if strings.Contains(args, "nvdimm") || strings.Contains(args, "-bios") {
		t.Errorf("nvdimm without an image, or firmware without one set: %s", args)
	}
	c.Firmware = "/usr/share/qemu/qboot.rom"
	if args := strings.Join(qemuArgs(c, "tcg"), " "); !strings.Contains(args, "-bios /usr/share/qemu/qboot.rom") {
		t.Errorf("firmware not passed: %s", args)
	}
	c.Firmware = ""
	img := filepath.Join(dir, "img")
	if err := os.WriteFile(img, make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Image = img
	args = strings.Join(qemuArgs(c, "kvm"), " ")
	for _, want := range []string{"nvdimm=on", "-cpu host", "slots=2,maxmem=259M", "mem-path=" + img + ",size=3M,readonly=on,share=on", "nvdimm,id=nv0,memdev=image"} {
		if !strings.Contains(args, want) {
			t.Errorf("QEMU args with image lack %q:\n%s", want, args)
		}
	}
	// A DAX root image is the one nvdimm and replaces the initramfs.
	c.Image, c.Initrd, c.RootImage = "", "", img
	args = strings.Join(qemuArgs(c, "tcg"), " ")
	for _, want := range []string{"nvdimm=on", "mem-path=" + img + ",size=3M,readonly=on,share=on", "nvdimm,id=nv0,memdev=image,unarmed=on", "root=/dev/pmem0p1"} {
		if !strings.Contains(args, want) {
			t.Errorf("QEMU args with a root image lack %q:\n%s", want, args)
		}
	}
	if strings.Contains(args, "-initrd") {
		t.Errorf("QEMU args with a root image load an initramfs:\n%s", args)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	k := filepath.Join(dir, "k")
	if err := os.WriteFile(k, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]Config{
		"no dir":       {Kernel: k, Initrd: k},
		"no kernel":    {Dir: dir, Initrd: k},
		"missing file": {Dir: dir, Kernel: k, Initrd: filepath.Join(dir, "missing")},
		"CID 2":        {Dir: dir, Kernel: k, Initrd: k, GuestCID: 2},
		"bad image":    {Dir: dir, Kernel: k, Initrd: k, Image: filepath.Join(dir, "missing")},
	} {
		if _, err := Start(context.Background(), c); err == nil {
			t.Errorf("%s: Start succeeded", name)
		}
	}
	for want, c := range map[string]Config{
		"an initramfs and a DAX root image": {Dir: dir, Kernel: k, Initrd: k, RootImage: k},
		"beside a DAX root image":           {Dir: dir, Kernel: k, RootImage: k, Image: k},
		"DAX root image: stat":              {Dir: dir, Kernel: k, RootImage: filepath.Join(dir, "missing")},
		"not supported on arm64":            {Dir: dir, Kernel: k, RootImage: k, Arch: ArchARM64},
	} {
		if _, err := Start(context.Background(), c); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: Start: %v, want an error about %q", c, err, want)
		}
	}
	c := Config{Dir: dir, Kernel: k, Initrd: k, Accel: "hvf", Vsockd: "/bin/true", QEMU: "/bin/true", Virtiofsd: "/bin/true"}
	if _, err := Start(context.Background(), c); err == nil || !strings.Contains(err.Error(), "hvf") {
		t.Errorf("unknown accelerator: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, stateFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed Start left %s: %v", stateFile, err)
	}
}

func TestUnixListening(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s")
	if ok, err := unixListening(p); ok || err != nil {
		t.Fatalf("absent socket: %v %v", ok, err)
	}
	// Bound but not listening: what a probe must not mistake for ready.
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: p}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := unixListening(p); ok {
		t.Error("bound socket reported as listening")
	}
	if err := syscall.Listen(fd, 1); err != nil {
		t.Fatal(err)
	}
	if ok, err := unixListening(p); !ok || err != nil {
		t.Errorf("listening socket not seen: %v %v", ok, err)
	}
}

func TestProcStopAndIdentity(t *testing.T) {
	dir := t.TempDir()
	// A shell that ignores SIGTERM must still be gone after Stop.
	p, err := startProc("stubborn", "/bin/sh", []string{"-c", "trap '' TERM; while :; do sleep 1; done"}, filepath.Join(dir, "log"), false)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the trap be installed
	if !p.Running() || p.Start == 0 {
		t.Fatalf("not running: %+v", p)
	}
	// A record of it, as another process would load from vm.json.
	rec := &Proc{Name: p.Name, PID: p.PID, Start: p.Start}
	if !rec.Running() {
		t.Fatal("record does not see the running process")
	}
	// The same pid with another start time is someone else: never signalled.
	other := &Proc{Name: "reused", PID: p.PID, Start: p.Start + 1}
	if other.Running() {
		t.Error("a pid with a different start time counts as running")
	}
	if err := p.Stop(200 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if p.Running() {
		t.Error("still running after Stop")
	}
	if err := syscall.Kill(p.PID, 0); err == nil {
		t.Errorf("pid %d still exists", p.PID)
	}
}

// virtiofsd never removes its pid file (/run/virtiofsd/<socket path>.pid);
// Stop does, once the virtiofsd it started has exited.
func TestStopRemovesVirtiofsdPidFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("virtiofsd needs root")
	}
	if _, err := os.Stat(DefaultVirtiofsd); err != nil {
		t.Skip("virtiofsd not installed (apt-get install qemu-system-common)")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, virtiofsSock)
	p, err := startProc("virtiofsd", DefaultVirtiofsd, []string{"--socket-path=" + sock, "-o", "source=" + t.TempDir(), "-o", "sandbox=chroot"},
		filepath.Join(dir, virtiofsLogFil), false)
	if err != nil {
		t.Fatal(err)
	}
	v := &VM{State: State{Dir: dir, Procs: []*Proc{p}}}
	defer func() { _ = v.Stop() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitListening(ctx, p, sock); err != nil {
		t.Fatalf("%v\n%s", err, Tail(filepath.Join(dir, virtiofsLogFil), 10))
	}
	pidFile := VirtiofsdPidFile(sock)
	if b, err := os.ReadFile(pidFile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(p.PID) {
		t.Fatalf("virtiofsd's pid file %s: %q %v (has virtiofsd moved it?)", pidFile, b, err)
	}
	if err := v.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left after Stop: %v", pidFile, err)
	}
}

// qemuOrSkip skips when QEMU is not installed.
func qemuOrSkip(t *testing.T) string {
	t.Helper()
	q, err := exec.LookPath(DefaultQEMU)
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	return q
}

func TestQMP(t *testing.T) {
	q := qemuOrSkip(t)
	sock := filepath.Join(t.TempDir(), "qmp.sock")
	// A machine without a guest: QMP answers at once, no boot needed.
	cmd := exec.Command(q, "-machine", "none", "-nodefaults", "-display", "none", "-qmp", "unix:"+sock+",server=on,wait=off")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var c *QMP
	var err error
	for {
		if c, err = DialQMP(ctx, sock); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer c.Close()
	var ver struct {
		QEMU struct{ Major, Minor int } `json:"qemu"`
	}
	if err := c.Execute(ctx, "query-version", nil, &ver); err != nil {
		t.Fatal(err)
	}
	if ver.QEMU.Major == 0 {
		t.Errorf("query-version: %+v", ver)
	}
	err = c.Execute(ctx, "no-such-command", nil, nil)
	var qe *QMPError
	if !errors.As(err, &qe) || qe.Class != "CommandNotFound" {
		t.Errorf("unknown command: %v", err)
	}
	err = c.Execute(ctx, "device_add", map[string]any{"driver": "virtio-blk-pci", "drive": "nope"}, nil)
	if !errors.As(err, &qe) {
		t.Errorf("bad device_add: %v", err)
	}
	// The connection still works after errors.
	if err := c.Execute(ctx, "query-status", nil, nil); err != nil {
		t.Errorf("after errors: %v", err)
	}
}

// leftovers lists processes whose command line mentions dir.
func leftovers(dir string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), dir) {
			continue
		}
		if st, err := procStartTime(pid); err == nil && st > 0 {
			out = append(out, fmt.Sprintf("%d: %s", pid, strings.ReplaceAll(string(b), "\x00", " ")))
		}
	}
	return out
}

// TestBootFailureReportsConsole boots Debian's kernel with an initramfs
// that has no /init: the kernel panics, QEMU exits, and Start must say so
// with the console tail and leave nothing running or behind.
func TestBootFailureReportsConsole(t *testing.T) {
	qemuOrSkip(t)
	testroot.Require(t, "a TCG boot")
	if testing.Short() {
		t.Skip("needs a TCG boot")
	}
	if _, err := os.Stat(DefaultVirtiofsd); err != nil {
		t.Skip("virtiofsd not installed")
	}
	vsockd, err := FindBinary("wren-vsockd")
	if err != nil {
		dir := t.TempDir()
		vsockd = filepath.Join(dir, "wren-vsockd")
		if out, err := exec.Command("go", "build", "-o", vsockd, "github.com/wren-vm/wren/vsockd/cmd/wren-vsockd").CombinedOutput(); err != nil {
			t.Fatalf("build wren-vsockd: %v\n%s", err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k, err := kernelpkg.Fetch(ctx, kernelpkg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	initrd := filepath.Join(work, "empty.cpio")
	// A newc archive holding only its trailer: an empty root, no /init.
	trailer := "070701" + strings.Repeat("0", 8*11) + "0000000B" + "00000000" + "TRAILER!!!\x00"
	trailer += strings.Repeat("\x00", (4-len(trailer)%4)%4)
	if err := os.WriteFile(initrd, []byte(trailer), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(work, "vm")
	_, err = Start(ctx, Config{Dir: dir, Kernel: k.Vmlinux, Initrd: initrd, Vsockd: vsockd, BootTimeout: 3 * time.Minute})
	if err == nil {
		t.Fatal("Start succeeded without an agent")
	}
	msg := err.Error()
	if !strings.Contains(msg, "QEMU exited before the agent answered") || !strings.Contains(msg, "console tail") || !strings.Contains(msg, "Kernel panic") {
		t.Errorf("error does not explain the failure:\n%s", msg)
	}
	if l := leftovers(dir); len(l) > 0 {
		t.Errorf("left running after a failed Start:\n%s", strings.Join(l, "\n"))
	}
	for _, f := range []string{vhostSockFile, hvsockFile, virtiofsSock, qmpSockFile, stateFile, "shared"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind: %v", f, err)
		}
	}
	if _, err := os.Stat(VirtiofsdPidFile(filepath.Join(dir, virtiofsSock))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("virtiofsd's pid file left behind: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, consoleFile)); err != nil {
		t.Errorf("console log not kept: %v", err)
	}
}

// TestHelpersDieWithCaller: helpers of an in-process VM must not outlive a
// caller that dies without Stop (a test binary killed by its timeout). The
// test re-executes itself as such a caller.
func TestHelpersDieWithCaller(t *testing.T) {
	if os.Getenv("WREN_VM_TEST_ORPHAN") != "" {
		p, err := startProc("sleeper", "/bin/sleep", []string{"1000"}, filepath.Join(os.Getenv("WREN_VM_TEST_ORPHAN"), "log"), false)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		fmt.Println("pid", p.PID, p.Start)
		os.Exit(0) // no Stop, no cleanup
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestHelpersDieWithCaller$")
	cmd.Env = append(os.Environ(), "WREN_VM_TEST_ORPHAN="+t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	var pid int
	var start uint64
	if _, err := fmt.Sscanf(string(out), "pid %d %d", &pid, &start); err != nil {
		t.Fatalf("helper said %q", out)
	}
	rec := &Proc{Name: "sleeper", PID: pid, Start: start}
	deadline := time.Now().Add(10 * time.Second)
	for rec.Running() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if rec.Running() {
		_ = rec.signal(syscall.SIGKILL) // clean up; the failure is below
		t.Fatalf("helper process %d outlived its caller", pid)
	}
}
