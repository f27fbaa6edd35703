package initd

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/internal/testroot"
)

const childEnv = "WREN_INITD_TEST_CHILD"

// inNamespaces runs the calling test again in a child process with fresh
// namespaces (Go makes a new mount namespace's / private), so mounts and
// link changes never touch the host. It returns true in the child, where
// the test body runs.
func inNamespaces(t *testing.T, flags uintptr) bool {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		return true
	}
	testroot.Require(t, "namespaces and mounts")
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: flags}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	return false
}

// scratchRoot returns an empty directory for a fake root with a private
// tmpfs on it. It must be used only in a child from inNamespaces. Cleanup
// detaches the tmpfs with everything mounted below it and removes only the
// then-empty directory: never RemoveAll a tree holding mounts, because
// devtmpfs is one instance shared with the host's /dev.
func scratchRoot(t *testing.T) string {
	t.Helper()
	if os.Getenv(childEnv) == "" {
		t.Fatal("scratchRoot outside a namespace child")
	}
	root, err := os.MkdirTemp("", "wren-initd-root-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "mode=0755"); err != nil {
		os.Remove(root)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(root, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount scratch root: %v", err)
			return
		}
		if err := os.Remove(root); err != nil {
			t.Errorf("remove scratch root: %v", err)
		}
	})
	return root
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func mountsUnder(t *testing.T, root string) map[string]string {
	t.Helper()
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) >= 4 && strings.HasPrefix(fl[1], root+"/") {
			got[strings.TrimPrefix(fl[1], root)] = fl[2] + " " + fl[3]
		}
	}
	return got
}

func TestEarlyMounts(t *testing.T) {
	if !inNamespaces(t, unix.CLONE_NEWNS) {
		return
	}
	root := scratchRoot(t)
	if err := EarlyMounts(root); err != nil {
		t.Fatal(err)
	}
	got := mountsUnder(t, root)
	for target, fstype := range map[string]string{"/proc": "proc", "/sys": "sysfs", "/dev": "devtmpfs", "/dev/pts": "devpts", "/dev/shm": "tmpfs", "/run": "tmpfs"} {
		if !strings.HasPrefix(got[target], fstype+" ") {
			t.Errorf("%s: %q, want %s", target, got[target], fstype)
		}
	}
	if !strings.Contains(got["/proc"], "nosuid") || !strings.Contains(got["/proc"], "noexec") {
		t.Errorf("/proc options %q", got["/proc"])
	}
	if !strings.Contains(got["/dev/pts"], "ptmxmode=666") {
		t.Errorf("/dev/pts options %q", got["/dev/pts"])
	}
	if target, err := os.Readlink(filepath.Join(root, "dev/ptmx")); err != nil || target != "pts/ptmx" {
		t.Errorf("/dev/ptmx -> %q, %v", target, err)
	}
	// A second call (e.g. after a restart of the agent) changes nothing.
	if err := EarlyMounts(root); err != nil {
		t.Fatal(err)
	}
	if again := mountsUnder(t, root); len(again) != len(got) {
		t.Errorf("second call stacked mounts: %d then %d", len(got), len(again))
	}
}

func TestEarlyMountsReportsFailures(t *testing.T) {
	if !inNamespaces(t, unix.CLONE_NEWNS) {
		return
	}
	root := scratchRoot(t)
	// A file where /run should be: that mount fails, the others happen.
	if err := os.WriteFile(filepath.Join(root, "run"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := EarlyMounts(root)
	if err == nil || !strings.Contains(err.Error(), "/run") {
		t.Fatalf("err = %v", err)
	}
	if got := mountsUnder(t, root); !strings.HasPrefix(got["/proc"], "proc ") || !strings.HasPrefix(got["/dev/shm"], "tmpfs ") {
		t.Errorf("other mounts missing after one failure: %v", got)
	}
}

func TestLoopbackUp(t *testing.T) {
	if !inNamespaces(t, unix.CLONE_NEWNET) {
		return
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if lo.Attrs().Flags&net.FlagUp != 0 {
		t.Fatal("lo already up in a new network namespace")
	}
	if err := LoopbackUp(); err != nil {
		t.Fatal(err)
	}
	lo, _ = netlink.LinkByName("lo")
	if lo.Attrs().Flags&net.FlagUp == 0 {
		t.Error("lo still down")
	}
}

func TestSetHostname(t *testing.T) {
	if !inNamespaces(t, unix.CLONE_NEWUTS) {
		return
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	check := func(want string) {
		t.Helper()
		got, _ := os.Hostname()
		if got != want {
			t.Errorf("hostname %q, want %q", got, want)
		}
	}
	if err := SetHostname(root, ""); err != nil {
		t.Fatal(err)
	}
	check("localhost")
	if err := os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("  pod-a extra\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := SetHostname(root, ""); err != nil {
		t.Fatal(err)
	}
	check("pod-a")
	if err := SetHostname(root, "given"); err != nil {
		t.Fatal(err)
	}
	check("given")
	if err := SetHostname(root, strings.Repeat("x", 100)); err == nil {
		t.Error("over-long hostname accepted")
	}
}

func TestSetOOMScoreAdj(t *testing.T) {
	if !inNamespaces(t, 0) { // its own process: the value is per process
		return
	}
	// Lowering needs CAP_SYS_RESOURCE, which this test's host may not
	// grant; raising is always allowed. The guest boot test checks -997.
	if err := SetOOMScoreAdj(321); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile("/proc/self/oom_score_adj")
	if strings.TrimSpace(string(b)) != "321" {
		t.Errorf("oom_score_adj = %q", b)
	}
	if err := SetOOMScoreAdj(5000); err == nil {
		t.Error("out-of-range value accepted")
	}
}

func TestCgroupV1Requested(t *testing.T) {
	for cmdline, want := range map[string]bool{
		"": false,
		"quiet systemd.unified_cgroup_hierarchy=1":                              false,
		"systemd.unified_cgroup_hierarchy=0":                                    true,
		"systemd.unified_cgroup_hierarchy=false":                                true,
		"systemd.unified_cgroup_hierarchy=0 cgroup_no_v1=all":                   false,
		"systemd.unified_cgroup_hierarchy=0 systemd.unified_cgroup_hierarchy=1": false,
	} {
		if got := CgroupV1Requested(strings.Fields(cmdline)); got != want {
			t.Errorf("%q: %v, want %v", cmdline, got, want)
		}
	}
}

func TestPowerOffNotPID1(t *testing.T) {
	if IsPID1() {
		t.Skip("running as PID 1")
	}
	consolePath = filepath.Join(t.TempDir(), "console")
	defer func() { consolePath = "/dev/console" }()
	if err := os.WriteFile(consolePath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := PowerOff(discard(), "test reason")
	if err == nil || !strings.Contains(err.Error(), "not PID 1") {
		t.Fatalf("err = %v", err)
	}
	if b, _ := os.ReadFile(consolePath); !strings.Contains(string(b), "powering off: test reason") {
		t.Errorf("console got %q", b)
	}
}

func TestRecoverRepanicsOutsidePID1(t *testing.T) {
	defer func() {
		if r := recover(); r != "boom" {
			t.Errorf("recovered %v, want the original panic", r)
		}
	}()
	defer Recover(discard(), "test")
	panic("boom")
}

func TestLogSink(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "log.sock"))
	if err != nil {
		t.Fatal(err)
	}
	sink := NewLogSinkListener(ctx, ln)
	sink.MaxBuffered = 200
	log := slog.New(sink.Handler(slog.LevelInfo))
	for i := 0; i < 5; i++ {
		log.Info("early", "i", i) // ~70 bytes each: only the newest fits
	}
	c, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	first, err := r.ReadString('\n')
	m := regexp.MustCompile(`"log lines dropped before the host connected","count":(\d)`).FindStringSubmatch(first)
	if err != nil || m == nil {
		t.Fatalf("first line %q, %v", first, err)
	}
	dropped, _ := strconv.Atoi(m[1])
	if dropped < 1 || dropped > 4 {
		t.Fatalf("dropped %d of 5 lines", dropped)
	}
	// What is left of the early lines arrives in order, newest last.
	var last string
	for i := dropped; i < 5; i++ {
		if last, err = r.ReadString('\n'); err != nil || !strings.Contains(last, fmt.Sprintf(`"i":%d`, i)) {
			t.Fatalf("buffered line %d: %q, %v", i, last, err)
		}
	}
	log.Info("live")
	live, _ := r.ReadString('\n')
	if !strings.Contains(live, `"msg":"live"`) {
		t.Errorf("live line %q", live)
	}
}

// TestLogSinkStalledReader checks that a host that connects but never reads
// cannot block the agent's logging.
func TestLogSinkStalledReader(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "log.sock"))
	if err != nil {
		t.Fatal(err)
	}
	sink := NewLogSinkListener(ctx, ln)
	sink.WriteTimeout = 100 * time.Millisecond
	c, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for sink.connected() == false {
		time.Sleep(time.Millisecond)
	}
	done := make(chan struct{})
	go func() {
		line := []byte(strings.Repeat("x", 4095) + "\n")
		for i := 0; i < 2000; i++ { // 8 MiB, far beyond the socket buffer
			_, _ = sink.Write(line) // never fails: it drops lines instead
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("logging blocked on a stalled reader")
	}
	// The writer goroutine gives up on the reader after WriteTimeout.
	for deadline := time.Now().Add(30 * time.Second); sink.connected(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("stalled connection kept")
		}
	}
	// A new reader gets the log again.
	c2, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	for !sink.connected() {
		time.Sleep(time.Millisecond)
	}
	slog.New(sink.Handler(slog.LevelInfo)).Info("after the stall")
	if err := c2.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c2)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("new reader: %v", err)
		}
		if strings.Contains(line, "after the stall") {
			break
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (s *LogSink) connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn != nil
}

// TestDebugConsolePTY runs a real shell on a pty for a Unix-socket
// connection (the vsock listener is swapped out: the host has no vsock).
func TestDebugConsolePTY(t *testing.T) {
	if _, err := FindShell(""); err != nil {
		t.Skip(err)
	}
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		t.Skipf("host has no pty multiplexer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "console.sock"))
	if err != nil {
		t.Fatal(err)
	}
	// dash: no rc files or line editing between the test and the prompt.
	dc := &DebugConsole{Log: discard(), Listener: ln, Shell: "/bin/sh"}
	if err := dc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(60 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// Wait for the prompt, so the command is read by the shell, not
	// typed ahead of it.
	r := bufio.NewReader(c)
	for prompt := ""; !strings.HasSuffix(prompt, "# "); {
		b, err := r.ReadByte()
		if err != nil {
			t.Fatalf("no prompt: %v (got %q)", err, prompt)
		}
		prompt += string(b)
	}
	if _, err := c.Write([]byte("tty; echo 'pid''='$$; exit 3\n")); err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(r) // ends when the shell exits and the pty closes
	s := strings.ReplaceAll(string(out), "\r", "")
	if !strings.Contains(s, "/dev/pts/") {
		t.Errorf("shell not on a pty:\n%s", s)
	}
	if !strings.Contains(s, "pid=") {
		t.Errorf("no shell output:\n%s", s)
	}
}

func TestLogSinkFallback(t *testing.T) {
	sink := NewLogBuffer()
	log := slog.New(sink.Handler(slog.LevelInfo))
	log.Info("before")
	var console lockedBuffer
	sink.Fallback(&console)
	log.Info("after")
	// Close delivers what is still buffered.
	if err := sink.Close(); err != nil {
		t.Errorf("Close without a listener: %v", err)
	}
	if s := console.String(); !strings.Contains(s, `"msg":"before"`) || !strings.Contains(s, `"msg":"after"`) {
		t.Errorf("console got %q", s)
	}
}
