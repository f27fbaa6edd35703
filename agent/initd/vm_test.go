package initd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wren-vm/wren/harness/testagent"
	"github.com/wren-vm/wren/internal/qemutest"
	"github.com/wren-vm/wren/rootfs-builder/initramfs"
	"github.com/wren-vm/wren/rootfs-builder/kernelpkg"
)

// bootAgent boots Debian's kernel with the agent as /init.
func bootAgent(t *testing.T, profile, cmdline string) *qemutest.VM {
	t.Helper()
	qemutest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k, err := kernelpkg.Fetch(ctx, kernelpkg.Options{})
	if err != nil {
		t.Fatalf("fetch Debian kernel: %v", err)
	}
	initrd := filepath.Join(t.TempDir(), "initrd.gz")
	if err := initramfs.BuildFile(initrd, initramfs.Options{Init: testagent.Binary(t, "wren-agent"), ModulesDir: k.ModulesDir, Profile: profile}); err != nil {
		t.Fatal(err)
	}
	return qemutest.Start(t, qemutest.Config{Kernel: k.Vmlinux, Initrd: initrd, Append: "quiet " + cmdline})
}

// logRecords returns the agent's JSON log records on the console.
func logRecords(console string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(console, "\n") {
		i := strings.Index(line, `{"time"`)
		if i < 0 {
			continue
		}
		var rec map[string]any
		if json.Unmarshal([]byte(line[i:]), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

// shell runs a command on the debug console and returns its output.
func shell(t *testing.T, vm *qemutest.VM, cmd string) string {
	t.Helper()
	n := strconv.FormatInt(time.Now().UnixNano(), 36)
	// Quotes split the markers so the tty's echo of the command line
	// does not match them.
	if err := vm.Send("echo 'BEG''IN-" + n + "'; " + cmd + "; echo 'EN''D-" + n + "'\n"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := vm.WaitFor(ctx, "END-"+n); err != nil {
		t.Fatalf("shell %q: %v", cmd, err)
	}
	c := vm.Console()
	out := c[strings.LastIndex(c, "BEGIN-"+n)+len("BEGIN-"+n) : strings.LastIndex(c, "END-"+n)]
	return strings.TrimSpace(out)
}

// TestAgentAsPID1 boots the real agent as /init and checks its init duties
// from a shell on its debug console (agent.debug_console, port 0), then
// sends SIGTERM to PID 1 and expects the VM to power off by itself.
func TestAgentAsPID1(t *testing.T) {
	vm := bootAgent(t, initramfs.ProfileDebug, "agent.debug_console agent.log=debug")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	hostWall, err := vm.WaitFor(ctx, `"msg":"listening"`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vm.WaitFor(ctx, `"msg":"debug console on /dev/console"`); err != nil {
		t.Fatal(err)
	}
	var listening, started map[string]any
	for _, rec := range logRecords(vm.Console()) {
		if rec["msg"] == "guest init started" {
			started = rec
		}
		if rec["level"] == "ERROR" {
			t.Errorf("error logged during boot: %v", rec)
		}
		if rec["msg"] == "listening" {
			listening = rec
		}
	}
	initMS, ok := listening["init_ms"].(float64)
	if !ok || initMS <= 0 {
		t.Fatalf("listening record without init time: %v", listening)
	}
	kernelMS, ok := started["uptime_ms"].(float64)
	if !ok {
		t.Fatalf("no guest init start record")
	}
	t0, err1 := time.Parse(time.RFC3339Nano, fmt.Sprint(started["time"]))
	t1, err2 := time.Parse(time.RFC3339Nano, fmt.Sprint(listening["time"]))
	if err1 != nil || err2 != nil {
		t.Fatalf("record times: %v %v", err1, err2)
	}
	t.Logf("QEMU start to listening (host): %s; kernel to /init: %.0f ms (guest uptime); agent init, /init to listening: %s; init_ms field: %.0f",
		hostWall.Round(time.Millisecond), kernelMS, t1.Sub(t0).Round(time.Millisecond), initMS)
	if os.Getenv("WREN_VMTEST_CONSOLE") != "" {
		t.Logf("console:\n%s", vm.Console())
	}

	// Commands typed before the shell's line editor starts may be lost.
	if _, err := vm.WaitForText(ctx, "/ # "); err != nil {
		t.Fatal(err)
	}
	if got := shell(t, vm, "cat /proc/1/oom_score_adj"); got != "-997" {
		t.Errorf("PID 1 oom_score_adj = %q", got)
	}
	if got := shell(t, vm, "readlink /dev/ptmx"); got != "pts/ptmx" {
		t.Errorf("/dev/ptmx -> %q", got)
	}
	mounts := shell(t, vm, "cat /proc/mounts")
	for _, want := range []string{"proc /proc proc", "sysfs /sys sysfs", "devtmpfs /dev devtmpfs", "devpts /dev/pts devpts", "shm /dev/shm tmpfs", "tmpfs /run tmpfs", "cgroup2 /sys/fs/cgroup cgroup2"} {
		if !strings.Contains(mounts, want) {
			t.Errorf("no %q mount in:\n%s", want, mounts)
		}
	}
	ctrl := " " + shell(t, vm, "cat /sys/fs/cgroup/cgroup.subtree_control") + " "
	for _, want := range []string{"cpu", "memory", "pids", "io", "cpuset"} {
		if !strings.Contains(ctrl, " "+want+" ") {
			t.Errorf("controller %s not enabled for children: %q", want, ctrl)
		}
	}
	if flags := shell(t, vm, "cat /sys/class/net/lo/flags"); flags == "" {
		t.Error("no lo flags")
	} else if v, err := strconv.ParseUint(strings.TrimPrefix(flags, "0x"), 16, 32); err != nil || v&1 == 0 {
		t.Errorf("lo not up: flags %q", flags)
	}
	if got := shell(t, vm, "hostname"); got != "localhost" {
		t.Errorf("hostname = %q", got)
	}
	// Field 6 of stat(5): PID 1 leads its own session. The console is
	// then the controlling tty of the debug shell (it takes it over).
	if f := strings.Fields(shell(t, vm, "cat /proc/1/stat")); len(f) < 7 || f[5] != "1" {
		t.Errorf("PID 1 is not a session leader: %v", f)
	}
	if got := shell(t, vm, "tty"); got != "/dev/console" {
		t.Errorf("debug shell tty = %q", got)
	}
	if n, _ := strconv.Atoi(shell(t, vm, "grep -c . /proc/modules")); n < len(initramfs.DefaultModules) {
		t.Errorf("only %d modules loaded", n)
	}

	t.Logf("agent memory after boot: %s", strings.Join(strings.Fields(shell(t, vm, "grep -E 'VmRSS|RssAnon' /proc/1/status")), " "))

	if err := vm.Send("kill -TERM 1\n"); err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(ctx); err != nil {
		t.Fatalf("VM did not power off cleanly: %v", err)
	}
	if !strings.Contains(vm.Console(), "powering off: signal received") {
		t.Errorf("power-off reason not on the console")
	}
}

// TestAgentBadCmdlinePowersOff gives the agent an invalid kernel command
// line value: it must say why on the console and power the VM off (QEMU
// exits by itself) rather than panic the kernel or hang.
func TestAgentBadCmdlinePowersOff(t *testing.T) {
	vm := bootAgent(t, initramfs.ProfileDefault, "agent.log_vport=not-a-port")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := vm.Wait(ctx); err != nil {
		t.Fatalf("VM did not power off by itself: %v", err)
	}
	c := vm.Console()
	if !regexp.MustCompile(`powering off: configuration: .*agent\.log_vport`).MatchString(c) {
		t.Errorf("console does not give the reason:\n%s", c)
	}
	if strings.Contains(c, "Kernel panic") {
		t.Errorf("kernel panicked:\n%s", c)
	}
}

// TestAgentCgroupV1 boots with systemd.unified_cgroup_hierarchy=0: the
// agent mounts one v1 hierarchy per controller.
func TestAgentCgroupV1(t *testing.T) {
	vm := bootAgent(t, initramfs.ProfileDefault, "systemd.unified_cgroup_hierarchy=0")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := vm.WaitFor(ctx, `"msg":"listening"`); err != nil {
		t.Fatal(err)
	}
	var ctrls string
	for _, rec := range logRecords(vm.Console()) {
		if rec["msg"] == "cgroup v1 mounted" {
			ctrls, _ = rec["controllers"].(string)
		}
		if rec["level"] == "ERROR" {
			t.Errorf("error logged: %v", rec)
		}
	}
	for _, want := range []string{"cpu", "memory", "pids", "devices", "freezer"} {
		if !strings.Contains(" "+ctrls+" ", " "+want+" ") {
			t.Errorf("v1 controller %s not mounted (got %q)", want, ctrls)
		}
	}
}

// TestAgentLogVport boots with agent.log_vport: the JSON log goes to the
// vsock stream (buffered until a host connects), not to the console; the
// power-off reason still reaches the console.
func TestAgentLogVport(t *testing.T) {
	vm := bootAgent(t, initramfs.ProfileDebug, "agent.log_vport=1025 agent.debug_console")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := vm.WaitFor(ctx, "guest init started"); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.WaitForText(ctx, "/ # "); err != nil {
		t.Fatal(err)
	}
	// The debug shell answering shows the agent got through its init.
	if got := shell(t, vm, "cat /proc/1/oom_score_adj"); got != "-997" {
		t.Errorf("PID 1 oom_score_adj = %q", got)
	}
	if strings.Contains(vm.Console(), `"msg":"listening"`) {
		t.Error("log records on the console despite agent.log_vport")
	}
	if err := vm.Send("kill -TERM 1\n"); err != nil {
		t.Fatal(err)
	}
	if err := vm.Wait(ctx); err != nil {
		t.Fatalf("VM did not power off: %v", err)
	}
	if !strings.Contains(vm.Console(), "wren-agent: powering off: signal received") {
		t.Error("power-off reason not on the console")
	}
}
