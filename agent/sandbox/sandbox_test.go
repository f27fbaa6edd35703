package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/container"
	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/agent/passfd"
	"github.com/wren-vm/wren/agent/reaper"
	"github.com/wren-vm/wren/agent/stdio"
	"github.com/wren-vm/wren/agent/storage"
	"github.com/wren-vm/wren/agent/userdb"
	"github.com/wren-vm/wren/internal/leakcheck"
	"github.com/wren-vm/wren/internal/testbundle"
	"github.com/wren-vm/wren/lib/fsremove"
	pb "github.com/wren-vm/wren/protocols/agentpb"
)

var (
	testReaper   *reaper.Reaper
	cgroupParent string
	seq          atomic.Int64
	bg           = context.Background()
)

func TestMain(m *testing.M) {
	testbundle.ContainerMain(m, container.InitHook, "wren-stest", func(r *reaper.Reaper, parent string) {
		testReaper, cgroupParent = r, parent
	})
}

// cgroupDirs are where the container's cgroups live on this host.
func cgroupDirs(id string) []string { return testbundle.CgroupDirs(cgroupParent, id) }

type env struct {
	t      *testing.T
	sb     *Sandbox
	state  string
	rootfs string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := newBenchEnv(t)
	e.t = t
	return e
}

// newBenchEnv makes an env with a created sandbox for tests and benchmarks.
// Each with function changes the options before the sandbox is made.
func newBenchEnv(t testing.TB, with ...func(*Options)) *env {
	t.Helper()
	dir := t.TempDir()
	opts := Options{
		StateRoot:    filepath.Join(dir, "state"),
		NamespaceDir: filepath.Join(dir, "ns"),
		PipeSize:     1 << 16,
		CgroupParent: cgroupParent,
		Reaper:       testReaper,
	}
	for _, f := range with {
		f(&opts)
	}
	sb, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{sb: sb, state: filepath.Join(dir, "state"), rootfs: testbundle.Rootfs(t, filepath.Join(dir, "rootfs"))}
	if b, ok := t.(*testing.B); ok {
		if err := sb.CreateSandbox(bg, Config{Hostname: "bench"}); err != nil {
			b.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if sb.Created() {
			if err := sb.DestroySandbox(bg); err != nil {
				t.Errorf("DestroySandbox: %v", err)
			}
		}
	})
	return e
}

func (e *env) createSandbox() {
	e.t.Helper()
	err := e.sb.CreateSandbox(bg, Config{
		Hostname: "wren-pod", ID: "pod1",
		DNS: []string{"nameserver 192.0.2.53", "search example.test"},
	})
	if err != nil {
		e.t.Fatalf("CreateSandbox: %v", err)
	}
}

func (e *env) spec(args ...string) *pb.Spec {
	s := testbundle.Spec(e.rootfs, args...)
	s.Linux.CgroupsPath = ""
	return ocispec.FromSpec(s)
}

func newID() string { return fmt.Sprintf("ctr%d", seq.Add(1)) }

func (e *env) create(id string, spec *pb.Spec, sandboxPidns bool) {
	e.t.Helper()
	if err := e.sb.CreateContainer(bg, ContainerConfig{ID: id, ExecID: id, Spec: ocispec.ToSpec(spec), SandboxPidns: sandboxPidns}); err != nil {
		e.t.Fatalf("CreateContainer %s: %v", id, err)
	}
}

func (e *env) run(args ...string) string {
	e.t.Helper()
	id := newID()
	e.create(id, e.spec(args...), false)
	if err := e.sb.StartContainer(bg, id); err != nil {
		e.t.Fatalf("StartContainer: %v", err)
	}
	return id
}

func (e *env) readAll(id, execID string, stderr bool) string {
	e.t.Helper()
	var out []byte
	for {
		which := stdio.Stdout
		if stderr {
			which = stdio.Stderr
		}
		data, err := e.sb.Read(bg, id, execID, which, 32<<10)
		if err != nil {
			e.t.Fatalf("read: %v", err)
		}
		if len(data) == 0 {
			return string(out)
		}
		out = append(out, data...)
	}
}

func (e *env) wait(id, execID string) int32 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	resp, err := e.sb.WaitProcess(ctx, id, execID)
	if err != nil {
		e.t.Fatalf("WaitProcess: %v", err)
	}
	return resp
}

func (e *env) remove(id string) {
	e.t.Helper()
	if err := e.sb.RemoveContainer(bg, id, 0); err != nil {
		e.t.Fatalf("RemoveContainer: %v", err)
	}
}

func wantKind(t *testing.T, what string, err error, want error) {
	t.Helper()
	if got := errdefs.KindOf(err); got != want {
		t.Errorf("%s: code %v (%v), want %v", what, got, err, want)
	}
}

func TestSandboxRequiredFirst(t *testing.T) {
	e := newEnv(t)
	wantKind(t, "CreateContainer", e.sb.CreateContainer(bg, ContainerConfig{ID: "abc", Spec: ocispec.ToSpec(e.spec("/bin/true"))}), errdefs.ErrFailedPrecondition)
	wantKind(t, "StartContainer", e.sb.StartContainer(bg, "abc"), errdefs.ErrFailedPrecondition)
	_, err := e.sb.GetOOMEvent(bg)
	wantKind(t, "GetOOMEvent", err, errdefs.ErrFailedPrecondition)
	wantKind(t, "DestroySandbox", e.sb.DestroySandbox(bg), errdefs.ErrFailedPrecondition)
	e.createSandbox()
	wantKind(t, "second CreateSandbox", e.sb.CreateSandbox(bg, Config{Hostname: "x"}), errdefs.ErrAlreadyExists)
}

func TestRunExitStatusesAndOutput(t *testing.T) {
	e := newEnv(t)
	e.createSandbox()
	for _, tc := range []struct {
		script string
		code   int32
		out    string
	}{
		{"echo hello", 0, "hello\n"},
		{"echo bye; exit 3", 3, "bye\n"},
	} {
		id := e.run("/bin/sh", "-c", tc.script)
		if got := e.readAll(id, "", false); got != tc.out {
			t.Errorf("%q: stdout %q, want %q", tc.script, got, tc.out)
		}
		if got := e.wait(id, ""); got != tc.code {
			t.Errorf("%q: status %d, want %d", tc.script, got, tc.code)
		}
		e.remove(id)
	}
	// SIGKILL through SignalProcess gives 137 too.
	id := e.run("/bin/sleep", "1000")
	if err := e.sb.SignalProcess(bg, id, id, uint32(unix.SIGKILL)); err != nil {
		t.Fatal(err)
	}
	if got := e.wait(id, id); got != 137 {
		t.Errorf("after SIGKILL: %d, want 137", got)
	}
}

// Hostname, DNS, the shared IPC namespace and the sandbox PID namespace.
func TestSandboxNamespacesAndDNS(t *testing.T) {
	e := newEnv(t)
	e.createSandbox()
	// Asking for the sandbox's pid namespace before any container made one
	// is refused, as Kata's agent refuses it, and leaves nothing.
	early := newID()
	wantKind(t, "sandbox_pidns with no sandbox pid namespace", e.sb.CreateContainer(bg, ContainerConfig{ID: early, Spec: ocispec.ToSpec(e.spec("/bin/true")), SandboxPidns: true}), errdefs.ErrFailedPrecondition)
	if _, err := os.Stat(filepath.Join(e.state, early)); !os.IsNotExist(err) {
		t.Errorf("refused container left its bundle: %v", err)
	}
	// The first container's pid namespace becomes the sandbox's. Its spec
	// names the test process's ipc and uts namespaces: the container gets
	// the sandbox's all the same, as from Kata's agent.
	first := newID()
	firstSpec := e.spec("/bin/sh", "-c", "readlink /proc/self/ns/ipc; hostname; cat /etc/resolv.conf; exec sleep 1000")
	for _, n := range firstSpec.Linux.Namespaces {
		if n.Type == "ipc" || n.Type == "uts" {
			n.Path = "/proc/self/ns/" + n.Type
		}
	}
	e.create(first, firstSpec, false)
	if err := e.sb.StartContainer(bg, first); err != nil {
		t.Fatal(err)
	}
	bundleCfg := filepath.Join(e.state, first, "config.json")
	if _, err := os.Stat(bundleCfg); err != nil {
		t.Errorf("bundle config: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.state, first, "rootfs", "bin", "busybox")); err != nil {
		t.Errorf("rootfs not bound into the bundle: %v", err)
	}
	var ipcStat unix.Stat_t
	if err := unix.Stat(filepath.Join(e.sb.opts.NamespaceDir, "ipc"), &ipcStat); err != nil {
		t.Fatal(err)
	}
	var out string
	for !strings.Contains(out, "search example.test") {
		data, err := e.sb.Read(bg, first, "", stdio.Stdout, 4096)
		if err != nil || len(data) == 0 {
			t.Fatalf("read: %v (so far %q)", err, out)
		}
		out += string(data)
	}
	want := fmt.Sprintf("ipc:[%d]\nwren-pod\nnameserver 192.0.2.53\nsearch example.test\n", ipcStat.Ino)
	if out != want {
		t.Errorf("first container saw\n%q\nwant\n%q", out, want)
	}
	second := e.run("/bin/true") // warm: a plain second container works too
	e.wait(second, "")
	e.remove(second)

	third := newID()
	e.create(third, e.spec("/bin/sh", "-c", "cat /proc/1/cmdline; echo; hostname"), true)
	if err := e.sb.StartContainer(bg, third); err != nil {
		t.Fatal(err)
	}
	if got := e.readAll(third, "", false); got != "sleep\x001000\x00\nwren-pod\n" {
		t.Errorf("container in the sandbox pid namespace saw %q", got)
	}
	e.wait(third, "")
	e.remove(third)
	e.remove(first)
	if _, err := os.Stat(filepath.Join(e.state, first)); !os.IsNotExist(err) {
		t.Errorf("bundle left after remove: %v", err)
	}
}

func TestExecStdinAndTTY(t *testing.T) {
	e := newEnv(t)
	e.createSandbox()
	id := e.run("/bin/sleep", "1000")
	proc := func(tty bool, args ...string) *pb.Process {
		return &pb.Process{Terminal: tty, Args: args, Env: []string{"PATH=/bin"}, Cwd: "/", User: &pb.User{}}
	}
	// Plain exec with a stdin round trip.
	if err := e.sb.ExecProcess(bg, id, "cat", ocispec.ToProcess(proc(false, "/bin/sh", "-c", "tr a-z A-Z")), nil, passfd.Ports{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sb.WriteStdin(bg, id, "cat", []byte("stdin round trip\n")); err != nil {
		t.Fatal(err)
	}
	wantKind(t, "TtyWinResize without tty", e.sb.TtyWinResize(bg, id, "cat", 10, 10), errdefs.ErrFailedPrecondition)
	if _, err := e.sb.WriteStdin(bg, id, "cat", nil); err != nil { // EOF
		t.Fatal(err)
	}
	_, err := e.sb.WriteStdin(bg, id, "cat", []byte("late"))
	wantKind(t, "write after close", err, errdefs.ErrFailedPrecondition)
	if got := e.readAll(id, "cat", false); got != "STDIN ROUND TRIP\n" {
		t.Errorf("stdout %q", got)
	}
	e.readAll(id, "cat", true)
	if got := e.wait(id, "cat"); got != 0 {
		t.Errorf("exec status %d", got)
	}
	// With a tty.
	if err := e.sb.ExecProcess(bg, id, "tty", ocispec.ToProcess(proc(true, "/bin/sh", "-c", "read l; echo got:$l; stty size; exit 5")), nil, passfd.Ports{}); err != nil {
		t.Fatal(err)
	}
	if err := e.sb.TtyWinResize(bg, id, "tty", 40, 120); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sb.WriteStdin(bg, id, "tty", []byte("hi\n")); err != nil {
		t.Fatal(err)
	}
	out := e.readAll(id, "tty", false)
	if !strings.Contains(out, "got:hi") || !strings.Contains(out, "40 120") {
		t.Errorf("tty output %q", out)
	}
	if got := e.wait(id, "tty"); got != 5 {
		t.Errorf("tty exec status %d, want 5", got)
	}
}

func TestPauseResumeUpdateStatsOOM(t *testing.T) {
	e := newEnv(t)
	e.createSandbox()
	id := e.run("/bin/sh", "-c", "head -c 8388608 /dev/zero > /tmp/f; echo ready; exec sleep 1000")
	if got, _ := e.sb.Read(bg, id, "", stdio.Stdout, 6); string(got) != "ready\n" {
		t.Fatalf("ready: %q", got)
	}
	if err := e.sb.PauseContainer(bg, id); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/freezer", cgroupParent, id, "freezer.state")); strings.TrimSpace(string(b)) != "FROZEN" {
		t.Errorf("freezer.state %q after pause", b)
	}
	if err := e.sb.ResumeContainer(bg, id); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/freezer", cgroupParent, id, "freezer.state")); strings.TrimSpace(string(b)) != "THAWED" {
		t.Errorf("freezer.state %q after resume", b)
	}
	const limit = 200 << 20
	if err := e.sb.UpdateContainer(bg, id, ocispec.ToResources(&pb.LinuxResources{Memory: &pb.LinuxMemory{Limit: limit}, Pids: &pb.LinuxPids{Limit: 99}})); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", cgroupParent, id, "memory.limit_in_bytes")); strings.TrimSpace(string(b)) != fmt.Sprint(limit) {
		t.Errorf("memory.limit_in_bytes %q, want %d", b, limit)
	}
	if b, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/pids", cgroupParent, id, "pids.max")); strings.TrimSpace(string(b)) != "99" {
		t.Errorf("pids.max %q, want 99", b)
	}
	st, err := e.sb.StatsContainer(bg, id)
	if err != nil {
		t.Fatal(err)
	}
	if st.MemoryStats.Usage.Usage == 0 || st.CpuStats.CpuUsage.TotalUsage == 0 || st.PidsStats.Current == 0 {
		t.Errorf("zero counters in stats: %+v", st)
	}
	if st.MemoryStats.Usage.Limit != uint64(limit) || st.PidsStats.Limit != 99 {
		t.Errorf("stats limits: memory %d pids %d", st.MemoryStats.Usage.Limit, st.PidsStats.Limit)
	}

	// OOM: a container that exceeds its limit reaches GetOOMEvent.
	oomID := newID()
	spec := e.spec("/bin/sh", "-c", "head -c 134217728 /dev/zero | tail")
	spec.Linux.Resources.Memory = &pb.LinuxMemory{Limit: 32 << 20}
	e.create(oomID, spec, false)
	if err := e.sb.StartContainer(bg, oomID); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	ev, err := e.sb.GetOOMEvent(ctx)
	if err != nil {
		t.Fatalf("GetOOMEvent: %v", err)
	}
	if ev != oomID {
		t.Errorf("OOM event for %q, want %q", ev, oomID)
	}
}

func TestKillAllAndRemoveWithProcessesRunning(t *testing.T) {
	e := newEnv(t)
	e.createSandbox()
	snap := leakcheck.Take(t)
	id := e.run("/bin/sh", "-c", "trap '' TERM; sleep 1000 & sleep 1000 & echo up; wait")
	if got, err := e.sb.Read(bg, id, "", stdio.Stdout, 3); err != nil || string(got) != "up\n" {
		t.Fatalf("up: %q %v", got, err)
	}
	id2 := e.run("/bin/sh", "-c", "sleep 1000 & exec sleep 1000")
	if err := e.sb.ExecProcess(bg, id2, "x", ocispec.ToProcess(&pb.Process{Args: []string{"/bin/sleep", "1000"}, Cwd: "/", User: &pb.User{}}), nil, passfd.Ports{}); err != nil {
		t.Fatal(err)
	}
	t.Log("kill-all on", id)
	if err := e.sb.SignalProcess(bg, id, "", uint32(unix.SIGKILL)); err != nil {
		t.Fatal(err)
	}
	if got := e.wait(id, ""); got != 137 {
		t.Errorf("init status %d, want 137", got)
	}
	e.remove(id)
	// Remove with everything still running.
	e.remove(id2)
	snap.Check(t, append(cgroupDirs(id), cgroupDirs(id2)...)...)
}

// missingBinary checks that a missing binary fails the request promptly
// (Kata #8026: it hung) and returns the ids it used.
func (e *env) missingBinary(t *testing.T) []string {
	t.Helper()
	nobin, live := newID(), ""
	if err := e.sb.CreateContainer(bg, ContainerConfig{ID: nobin, Spec: ocispec.ToSpec(e.spec("/no/such/binary"))}); err == nil {
		if err := e.sb.StartContainer(bg, nobin); err == nil {
			t.Error("a container with a missing binary started")
		}
		e.remove(nobin)
	}
	live = e.run("/bin/sleep", "1000")
	if err := e.sb.ExecProcess(bg, live, "nobin", ocispec.ToProcess(&pb.Process{Args: []string{"/no/such/binary"}, Cwd: "/"}), nil, passfd.Ports{}); err == nil {
		t.Error("exec of a missing binary succeeded")
	}
	e.remove(live)
	return []string{nobin, live}
}

func TestBadInputsLeaveNothingBehind(t *testing.T) {
	e := newEnv(t)
	e.createSandbox()
	// libcontainer and the cgroup library open a few handles once per
	// process (the cgroup root, /) on these paths: warm them up first.
	e.missingBinary(t)
	snap := leakcheck.Take(t)
	var used []string
	for range 2 {
		used = append(used, e.missingBinary(t)...)
	}
	for _, bad := range []string{"", "a", "-abc", "a/b", "../x", "a b", "sandbox", strings.Repeat("x", 2000)} {
		wantKind(t, fmt.Sprintf("id %q", bad), e.sb.CreateContainer(bg, ContainerConfig{ID: bad, Spec: ocispec.ToSpec(e.spec("/bin/true"))}), errdefs.ErrInvalidArgument)
	}
	wantKind(t, "no OCI spec", e.sb.CreateContainer(bg, ContainerConfig{ID: "nospec"}), errdefs.ErrInvalidArgument)
	noRoot := e.spec("/bin/true")
	noRoot.Root.Path = "/nonexistent/rootfs"
	wantKind(t, "missing rootfs", e.sb.CreateContainer(bg, ContainerConfig{ID: "noroot", Spec: ocispec.ToSpec(noRoot)}), errdefs.ErrInvalidArgument)
	badRlimit := e.spec("/bin/true")
	badRlimit.Process.Rlimits = []*pb.POSIXRlimit{{Type: "RLIMIT_BOGUS"}}
	wantKind(t, "bad rlimit", e.sb.CreateContainer(bg, ContainerConfig{ID: "badrlimit", Spec: ocispec.ToSpec(badRlimit)}), errdefs.ErrInvalidArgument)
	// Only the pid, ipc and uts namespaces are shared, and the agent picks
	// them: a path for any other is refused before anything is made.
	for _, typ := range []string{"mount", "network", "user", "cgroup"} {
		joins := e.spec("/bin/true")
		joins.Linux.Namespaces = append(joins.Linux.Namespaces, &pb.LinuxNamespace{Type: typ, Path: "/proc/1/ns/" + typ})
		wantKind(t, typ+" namespace by path", e.sb.CreateContainer(bg, ContainerConfig{ID: "joins-" + typ, Spec: ocispec.ToSpec(joins)}), errdefs.ErrInvalidArgument)
	}
	wantKind(t, "storages without a storage layer", e.sb.CreateContainer(bg, ContainerConfig{ID: "stor", Spec: ocispec.ToSpec(e.spec("/bin/true")), Storages: []storage.Volume{{Driver: "local"}}}), errdefs.ErrUnimplemented)

	id := e.run("/bin/sh", "-c", "exit 0")
	wantKind(t, "duplicate", e.sb.CreateContainer(bg, ContainerConfig{ID: id, Spec: ocispec.ToSpec(e.spec("/bin/true"))}), errdefs.ErrAlreadyExists)
	wantKind(t, "start twice", e.sb.StartContainer(bg, id), errdefs.ErrFailedPrecondition)
	e.wait(id, "")
	wantKind(t, "exec into stopped", e.sb.ExecProcess(bg, id, "e", ocispec.ToProcess(&pb.Process{Args: []string{"/bin/true"}, Cwd: "/"}), nil, passfd.Ports{}), errdefs.ErrFailedPrecondition)
	wantKind(t, "exec into unknown", e.sb.ExecProcess(bg, "unknown", "e", ocispec.ToProcess(&pb.Process{Args: []string{"/bin/true"}, Cwd: "/"}), nil, passfd.Ports{}), errdefs.ErrNotFound)
	wantKind(t, "start unknown", e.sb.StartContainer(bg, "unknown"), errdefs.ErrNotFound)
	wantKind(t, "remove unknown", e.sb.RemoveContainer(bg, "unknown", 0), errdefs.ErrNotFound)
	_, err := e.sb.WaitProcess(bg, id, "nope")
	wantKind(t, "wait unknown exec", err, errdefs.ErrNotFound)
	wantKind(t, "bad signal", e.sb.SignalProcess(bg, id, "", 999), errdefs.ErrInvalidArgument)
	wantKind(t, "resume running", e.sb.ResumeContainer(bg, id), errdefs.ErrFailedPrecondition)
	e.remove(id)
	dirs := cgroupDirs(id)
	for _, u := range used {
		dirs = append(dirs, cgroupDirs(u)...)
	}
	snap.Check(t, dirs...)
	entries, _ := os.ReadDir(e.state)
	for _, en := range entries {
		if en.Name() != "sandbox" && en.Name() != libcontainerDir {
			t.Errorf("state root has %s left", en.Name())
		}
	}
}

// TestContainerCgroupsNestUnderParent: whatever cgroupsPath a spec names,
// the container's cgroup is below the cgroup parent (where the sandbox's
// pids ceiling is set), and ".." cannot climb out of it.
func TestContainerCgroupsNestUnderParent(t *testing.T) {
	e := newEnv(t)
	e.createSandbox()
	elsewhere := fmt.Sprintf("wren-stest-elsewhere-%d", os.Getpid())
	// Where an unfixed agent would put them.
	t.Cleanup(func() { testbundle.RemoveCgroupParent(elsewhere) })
	for _, tt := range []struct{ path, want string }{
		{"", "/" + cgroupParent + "/%s"},
		{"/" + elsewhere + "/kubepods/%s", "/" + cgroupParent + "/" + elsewhere + "/kubepods/%s"},
		{elsewhere + "/relative/%s", "/" + cgroupParent + "/" + elsewhere + "/relative/%s"},
		{"/../../" + elsewhere + "/%s", "/" + cgroupParent + "/" + elsewhere + "/%s"},
		{"/" + cgroupParent + "/inside/%s", "/" + cgroupParent + "/inside/%s"},
	} {
		id := newID()
		spec := e.spec("/bin/sleep", "1000")
		if tt.path != "" {
			spec.Linux.CgroupsPath = fmt.Sprintf(tt.path, id)
		}
		e.create(id, spec, false)
		want := fmt.Sprintf(tt.want, id)
		if got := initPidsCgroup(t, e.sb, id); got != want {
			t.Errorf("cgroupsPath %q: the init is in pids cgroup %s, want %s", spec.Linux.CgroupsPath, got, want)
		}
		e.remove(id)
	}
}

// TestPidsCeiling: CreateSandbox sets the ceiling on the cgroup parent, a
// container whose spec sets no pids limit gets one below it (so it cannot
// take the pod's last pids), and a spec's own limit is kept.
func TestPidsCeiling(t *testing.T) {
	const ceiling = 128
	parent := cgroupParent + "/ceiling"
	dir := t.TempDir()
	sb, err := New(Options{
		StateRoot: filepath.Join(dir, "state"), NamespaceDir: filepath.Join(dir, "ns"),
		CgroupParent: parent, PidsMax: ceiling, Reaper: testReaper,
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, sb: sb, state: filepath.Join(dir, "state"), rootfs: testbundle.Rootfs(t, filepath.Join(dir, "rootfs"))}
	e.createSandbox()
	t.Cleanup(func() {
		if err := sb.DestroySandbox(bg); err != nil {
			t.Errorf("DestroySandbox: %v", err)
		}
	})
	if got := readPidsMax(t, parent); got != fmt.Sprint(ceiling) {
		t.Errorf("pids.max of the cgroup parent %q, want %d", got, ceiling)
	}

	unlimited := e.spec("/bin/sleep", "1000")
	unlimited.Linux.Resources.Pids = &pb.LinuxPids{Limit: -1}
	for name, spec := range map[string]*pb.Spec{"no pids limit": e.spec("/bin/sleep", "1000"), "pids limit max": unlimited} {
		id := newID()
		e.create(id, spec, false)
		want := fmt.Sprint(ceiling - 32)
		if got := readPidsMax(t, parent+"/"+id); got != want {
			t.Errorf("%s: pids.max of the container %q, want %s", name, got, want)
		}
		e.remove(id)
	}
	own := e.spec("/bin/sleep", "1000")
	own.Linux.Resources.Pids = &pb.LinuxPids{Limit: 50}
	id := newID()
	e.create(id, own, false)
	if got := readPidsMax(t, parent+"/"+id); got != "50" {
		t.Errorf("pids.max of a container with its own limit %q, want 50", got)
	}
	e.remove(id)
}

// TestPidsCeilingDerived: without a configured ceiling the parent gets
// one below this kernel's own limits.
func TestPidsCeilingDerived(t *testing.T) {
	e := newEnv(t)
	e.createSandbox()
	var limit int64 = 1 << 62
	for _, name := range []string{"pid_max", "threads-max"} {
		b, err := os.ReadFile("/proc/sys/kernel/" + name)
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		limit = min(limit, n)
	}
	want := DerivePidsMax(limit, limit)
	if got := readPidsMax(t, cgroupParent); got != fmt.Sprint(want) {
		t.Errorf("pids.max of the cgroup parent %q, want %d (kernel limit %d)", got, want, limit)
	}
	if want >= limit {
		t.Errorf("derived ceiling %d leaves nothing of the kernel's %d", want, limit)
	}
}

func TestDerivePidsMax(t *testing.T) {
	for _, tt := range []struct{ pidMax, threadsMax, want int64 }{
		{32768, 192735, 32768 - 4096}, // an eighth reserved
		{4194304, 3700, 3700 - 512},   // a small guest: the floor
		{32768, 600, 300},             // a tiny one: never more than half
	} {
		if got := DerivePidsMax(tt.pidMax, tt.threadsMax); got != tt.want {
			t.Errorf("DerivePidsMax(%d, %d) = %d, want %d", tt.pidMax, tt.threadsMax, got, tt.want)
		}
	}
	for _, tt := range []struct{ ceiling, want int64 }{{64, 32}, {256, 224}, {4096, 3584}} {
		if got := containerPidsMax(tt.ceiling); got != tt.want {
			t.Errorf("containerPidsMax(%d) = %d, want %d", tt.ceiling, got, tt.want)
		}
	}
}

// readPidsMax reads pids.max of cgroup path (relative to the hierarchy).
func readPidsMax(t *testing.T, path string) string {
	t.Helper()
	root := "/sys/fs/cgroup/pids"
	if cgroups.IsCgroup2UnifiedMode() {
		root = "/sys/fs/cgroup"
	}
	b, err := os.ReadFile(filepath.Join(root, path, "pids.max"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// initPidsCgroup is the pids cgroup of container id's init, as
// /proc/<pid>/cgroup names it.
func initPidsCgroup(t *testing.T, sb *Sandbox, id string) string {
	t.Helper()
	c, err := sb.container(id)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", c.InitPid()))
	if err != nil {
		t.Fatal(err)
	}
	v2 := ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		switch {
		case len(f) != 3:
		case f[1] == "pids":
			return f[2]
		case f[0] == "0":
			v2 = f[2]
		}
	}
	return v2
}

// A RemoveContainer whose processes cannot die in time (their parent
// cgroup is frozen, so SIGKILL stays pending) reports DeadlineExceeded and
// keeps the container; a later remove succeeds.
func TestRemoveTimeout(t *testing.T) {
	e := newEnv(t)
	e.createSandbox()
	id := newID()
	spec := e.spec("/bin/sleep", "1000")
	spec.Linux.CgroupsPath = "/" + cgroupParent + "/frozen/" + id
	e.create(id, spec, false)
	if err := e.sb.StartContainer(bg, id); err != nil {
		t.Fatal(err)
	}
	parent := filepath.Join("/sys/fs/cgroup/freezer", cgroupParent, "frozen")
	if err := os.WriteFile(filepath.Join(parent, "freezer.state"), []byte("FROZEN"), 0); err != nil {
		t.Skipf("no v1 freezer: %v", err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			if err := os.WriteFile(filepath.Join(parent, "freezer.state"), []byte("THAWED"), 0); err != nil {
				t.Errorf("thaw: %v", err)
			}
			thawed = true
		}
	}
	defer thaw()
	err := e.sb.RemoveContainer(bg, id, 1*time.Second)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("remove of an unkillable container: %v, want the deadline exceeded", err)
	}
	thaw()
	e.remove(id)
}

// While one container's WaitProcess and ReadStdout block, another container
// is served.
func TestConcurrency(t *testing.T) {
	e := newEnv(t)
	e.createSandbox()
	a := e.run("/bin/sleep", "1000")
	blocked := make(chan error, 2)
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	go func() {
		_, err := e.sb.WaitProcess(ctx, a, "")
		blocked <- err
	}()
	go func() {
		_, err := e.sb.Read(ctx, a, "", stdio.Stdout, 10)
		blocked <- err
	}()
	b := e.run("/bin/sh", "-c", "echo b-ran")
	if got := e.readAll(b, "", false); got != "b-ran\n" {
		t.Errorf("container B stdout %q", got)
	}
	if got := e.wait(b, ""); got != 0 {
		t.Errorf("B status %d", got)
	}
	if _, err := e.sb.StatsContainer(bg, b); err != nil {
		t.Errorf("stats of B: %v", err)
	}
	e.remove(b)
	select {
	case err := <-blocked:
		t.Fatalf("A's blocking call returned early: %v", err)
	default:
	}
	cancel()
	for range 2 {
		if err := <-blocked; !errors.Is(err, context.Canceled) {
			t.Errorf("blocked call after cancel: %v, want Canceled", err)
		}
	}
}

func TestDestroySandboxCleansUpAndUnblocksOOMWait(t *testing.T) {
	e := newEnv(t)
	snap := leakcheck.Take(t)
	e.createSandbox()
	id := e.run("/bin/sleep", "1000")
	done := make(chan error, 1)
	go func() {
		_, err := e.sb.GetOOMEvent(bg)
		done <- err
	}()
	if err := e.sb.DestroySandbox(bg); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("GetOOMEvent returned an event after DestroySandbox")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("GetOOMEvent still blocked after DestroySandbox")
	}
	select {
	case <-e.sb.Destroyed():
	default:
		t.Error("Destroyed not closed")
	}
	snap.Check(t, cgroupDirs(id)...)
	if _, err := os.Stat(filepath.Join(e.state, "sandbox")); !os.IsNotExist(err) {
		t.Errorf("sandbox state left: %v", err)
	}
	wantKind(t, "CreateContainer after destroy", e.sb.CreateContainer(bg, ContainerConfig{ID: "after", Spec: ocispec.ToSpec(e.spec("/bin/true"))}), errdefs.ErrFailedPrecondition)
}

// A bundle whose rootfs has several mounts stacked on it is still removed
// whole: every one of them is detached, not only the top one.
func TestCleanupBundleDetachesStackedMounts(t *testing.T) {
	e := newEnv(t)
	bundle := filepath.Join(t.TempDir(), "bundle")
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := unix.Mount("tmpfs", rootfs, "tmpfs", 0, ""); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for unix.Unmount(rootfs, unix.MNT_DETACH) == nil {
		}
	})
	if err := e.sb.cleanupBundle(&entry{bundle: bundle, rootfs: rootfs}); err != nil {
		t.Fatalf("cleanupBundle: %v", err)
	}
	if _, err := os.Stat(bundle); !os.IsNotExist(err) {
		t.Errorf("bundle still there: %v", err)
	}
}

// A bundle that still holds a mount after the rootfs is detached is kept,
// and what is mounted there is logged for whoever looks into it.
func TestCleanupBundleReportsWhatStaysMounted(t *testing.T) {
	var logs bytes.Buffer
	sb, err := New(Options{StateRoot: t.TempDir(), Reaper: testReaper, Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(t.TempDir(), "bundle")
	other := filepath.Join(bundle, "other")
	if err := os.MkdirAll(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", other, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(other, unix.MNT_DETACH) })
	if err := sb.cleanupBundle(&entry{bundle: bundle}); !errors.Is(err, fsremove.ErrMounted) {
		t.Fatalf("cleanupBundle: %v, want ErrMounted", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("the bundle was emptied across a mount: %v", err)
	}
	if !strings.Contains(logs.String(), "bundle still holds mounts") || !strings.Contains(logs.String(), other) {
		t.Errorf("no record of the mount left in the bundle:\n%s", logs.String())
	}
}

// TestKernelModuleThatIsNotThereLeavesNoSandbox: CreateSandbox's
// kernel_modules load through the agent's own loader from the module tree
// (the guest has no modprobe); a module the tree lacks is NotFound, and the
// sandbox stays uncreated with nothing left of the attempt.
func TestKernelModuleThatIsNotThereLeavesNoSandbox(t *testing.T) {
	e := newEnv(t)
	// A module tree holding one (never loaded) module file: enough for the
	// loader to index it and find that the name asked for is not there.
	tree := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tree, "kernel", "fs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "kernel", "fs", "present.ko"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e.sb.opts.ModulesDir = tree
	err := e.sb.CreateSandbox(bg, Config{Hostname: "mods", KernelModules: []KernelModule{{Name: "wren_no_such_module", Parameters: []string{"x=1"}}}})
	wantKind(t, "a kernel module the guest lacks", err, errdefs.ErrNotFound)
	if err == nil || !strings.Contains(err.Error(), "wren_no_such_module") {
		t.Errorf("the error does not name the module: %v", err)
	}
	if e.sb.Created() {
		t.Fatal("the sandbox counts as created")
	}
	for _, p := range []string{filepath.Join(e.state, "sandbox"), e.sb.opts.NamespaceDir} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left by the failed CreateSandbox: %v", p, err)
		}
	}
	wantKind(t, "an invalid module name", e.sb.CreateSandbox(bg, Config{KernelModules: []KernelModule{{Name: "a/b"}}}), errdefs.ErrInvalidArgument)
	// The next CreateSandbox starts from a clean slate.
	if err := e.sb.CreateSandbox(bg, Config{Hostname: "mods"}); err != nil {
		t.Fatal(err)
	}
}

// TestStringUserResolvedInTheContainer: a user named by the request
// (string_user) is looked up in the container's own /etc/passwd and
// /etc/group, for the init and for an exec; a name the container does not
// know is refused and leaves nothing.
func TestStringUserResolvedInTheContainer(t *testing.T) {
	e := newEnv(t)
	e.createSandbox()
	f, err := os.OpenFile(filepath.Join(e.rootfs, "etc", "group"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("audio:x:29:nobody\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	id := newID()
	err = e.sb.CreateContainer(bg, ContainerConfig{ID: id, Spec: ocispec.ToSpec(e.spec("/bin/sh", "-c", "id -u; id -g; id -G; exec sleep 1000")), User: &userdb.Spec{User: "nobody"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.sb.StartContainer(bg, id); err != nil {
		t.Fatal(err)
	}
	var out string
	for strings.Count(out, "\n") < 3 {
		data, err := e.sb.Read(bg, id, "", stdio.Stdout, 4096)
		if err != nil || len(data) == 0 {
			t.Fatalf("read: %v (so far %q)", err, out)
		}
		out += string(data)
	}
	if out != "65534\n65534\n65534 29\n" {
		t.Errorf("init as nobody printed %q, want uid, gid 65534 and groups 65534 29", out)
	}
	proc := ocispec.ToProcess(&pb.Process{Args: []string{"/bin/sh", "-c", "id -u"}, Env: []string{"PATH=/bin"}, Cwd: "/", User: &pb.User{}})
	if err := e.sb.ExecProcess(bg, id, "asroot", proc, &userdb.Spec{User: "root"}, passfd.Ports{}); err != nil {
		t.Fatal(err)
	}
	if got := e.readAll(id, "asroot", false); got != "0\n" {
		t.Errorf("exec as root printed %q", got)
	}
	bad := newID()
	wantKind(t, "an unknown user", e.sb.CreateContainer(bg, ContainerConfig{ID: bad, Spec: ocispec.ToSpec(e.spec("/bin/true")), User: &userdb.Spec{User: "mallory"}}), errdefs.ErrInvalidArgument)
	if _, err := os.Stat(filepath.Join(e.state, bad)); !os.IsNotExist(err) {
		t.Errorf("the refused container left its bundle: %v", err)
	}
	wantKind(t, "an exec as an unknown user", e.sb.ExecProcess(bg, id, "x", proc, &userdb.Spec{User: "mallory"}, passfd.Ports{}), errdefs.ErrInvalidArgument)
}

// TestGuestHooksRunForEveryContainer: the executable files below
// guest_hook_path's prestart, poststart and poststop directories run as
// OCI hooks for every container, with their name and kind as arguments; a
// failing prestart hook fails the create and leaves nothing.
func TestGuestHooksRunForEveryContainer(t *testing.T) {
	e := newEnv(t)
	hooks, marks := t.TempDir(), t.TempDir()
	write := func(rel, script string, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(hooks, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(script), mode); err != nil {
			t.Fatal(err)
		}
	}
	// Each hook records its arguments and the container id from the state
	// on its stdin.
	mark := "#!/bin/sh\nid=$(sed -n 's/.*\"id\": *\"\\([^\"]*\\)\".*/\\1/p')\necho \"$0 $*\" >> " + marks + "/$id\n"
	for _, kind := range []string{"prestart", "poststart", "poststop"} {
		write(kind+"/10-mark", mark, 0o755)
	}
	write("prestart/README", "not a hook: not executable", 0o644)
	err := e.sb.CreateSandbox(bg, Config{Hostname: "hooks", GuestHookPath: hooks})
	if err != nil {
		t.Fatal(err)
	}
	id := e.run("/bin/true")
	e.wait(id, "")
	e.remove(id)
	b, _ := os.ReadFile(filepath.Join(marks, id))
	want := hooks + "/prestart/10-mark prestart\n" + hooks + "/poststart/10-mark poststart\n" + hooks + "/poststop/10-mark poststop\n"
	if string(b) != want {
		t.Errorf("hooks ran as\n%s\nwant\n%s", b, want)
	}

	write("prestart/20-fail", "#!/bin/sh\nexit 3\n", 0o755)
	// Hooks are read at CreateSandbox: a new sandbox sees the failing one.
	if err := e.sb.DestroySandbox(bg); err != nil {
		t.Fatal(err)
	}
	if err := e.sb.CreateSandbox(bg, Config{Hostname: "hooks", GuestHookPath: hooks}); err != nil {
		t.Fatal(err)
	}
	failed := newID()
	if err := e.sb.CreateContainer(bg, ContainerConfig{ID: failed, Spec: ocispec.ToSpec(e.spec("/bin/true"))}); err == nil {
		t.Fatal("a failing prestart hook did not fail the create")
	}
	if _, err := os.Stat(filepath.Join(e.state, failed)); !os.IsNotExist(err) {
		t.Errorf("the failed create left its bundle: %v", err)
	}
	for _, d := range cgroupDirs(failed) {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("the failed create left cgroup %s", d)
		}
	}
	// A hook path that does not exist is logged, as Kata's agent does, and
	// the sandbox runs its containers without hooks.
	if err := e.sb.DestroySandbox(bg); err != nil {
		t.Fatal(err)
	}
	if err := e.sb.CreateSandbox(bg, Config{GuestHookPath: filepath.Join(hooks, "nope")}); err != nil {
		t.Fatalf("CreateSandbox with a guest hook path that does not exist: %v", err)
	}
	nohooks := e.run("/bin/true")
	e.wait(nohooks, "")
	if _, err := os.Stat(filepath.Join(marks, nohooks)); !os.IsNotExist(err) {
		t.Errorf("hooks ran for a sandbox without any: %v", err)
	}
}

// TestDestroySandboxLeavesNothing: after DestroySandbox the agent's state
// holds nothing of the sandbox: no namespace directory, no cgroup parent.
// The sandbox gets a cgroup parent of its own: the package's shared one
// also holds cgroups other tests make by hand.
func TestDestroySandboxLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	parent := cgroupParent + "-own"
	defer testbundle.RemoveCgroupParent(parent)
	sb, err := New(Options{
		StateRoot: filepath.Join(dir, "state"), NamespaceDir: filepath.Join(dir, "ns"),
		CgroupParent: parent, Reaper: testReaper,
	})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, sb: sb, state: filepath.Join(dir, "state"), rootfs: testbundle.Rootfs(t, filepath.Join(dir, "rootfs"))}
	e.createSandbox()
	id := e.run("/bin/true")
	e.wait(id, "")
	if err := e.sb.DestroySandbox(bg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(e.sb.opts.NamespaceDir); !os.IsNotExist(err) {
		t.Errorf("namespace directory %s left: %v", e.sb.opts.NamespaceDir, err)
	}
	for _, d := range testbundle.CgroupDirs(parent, "") {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("cgroup parent %s left", d)
		}
	}
}

// TestSharedMountFromASidecar: a mount the source container made inside
// itself appears at the destination path of the container that names it
// in shared_mounts, matched by the CRI container name; a missing source is
// refused and leaves nothing.
func TestSharedMountFromASidecar(t *testing.T) {
	e := newEnv(t)
	e.createSandbox()
	side := newID()
	ss := e.spec("/bin/sh", "-c", "echo from the sidecar > /mnt/storage/f; echo ready; exec sleep 1000")
	ss.Mounts = append(ss.Mounts, &pb.Mount{Destination: "/mnt/storage", Type: "tmpfs", Source: "tmpfs", Options: []string{"size=1m"}})
	ss.Annotations = map[string]string{criNameAnnotation: "sidecar"}
	e.create(side, ss, false)
	if err := e.sb.StartContainer(bg, side); err != nil {
		t.Fatal(err)
	}
	if got, err := e.sb.Read(bg, side, "", stdio.Stdout, 6); err != nil || string(got) != "ready\n" {
		t.Fatalf("sidecar: %q %v", got, err)
	}
	share := []SharedMount{{Name: "storage", SrcCtr: "sidecar", SrcPath: "/mnt/storage", DstCtr: "app", DstPath: "/data"}}
	app := newID()
	as := e.spec("/bin/cat", "/data/f")
	as.Annotations = map[string]string{criNameAnnotation: "app"}
	if err := e.sb.CreateContainer(bg, ContainerConfig{ID: app, Spec: ocispec.ToSpec(as), SharedMounts: share}); err != nil {
		t.Fatal(err)
	}
	if err := e.sb.StartContainer(bg, app); err != nil {
		t.Fatal(err)
	}
	if got := e.readAll(app, "", false); got != "from the sidecar\n" {
		t.Errorf("the app container read %q through the shared mount", got)
	}
	// The guest's own mount table holds nothing of it.
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), " /data ") {
		t.Error("the shared mount shows in the agent's mount namespace")
	}

	missing := newID()
	wantKind(t, "a shared mount from a container that is not there", e.sb.CreateContainer(bg, ContainerConfig{ID: missing, Spec: ocispec.ToSpec(as),
		SharedMounts: []SharedMount{{Name: "x", SrcCtr: "nobody", SrcPath: "/mnt/storage", DstCtr: missing, DstPath: "/data"}}}), errdefs.ErrFailedPrecondition)
	if _, err := os.Stat(filepath.Join(e.state, missing)); !os.IsNotExist(err) {
		t.Errorf("the refused container left its bundle: %v", err)
	}
	wantKind(t, "a relative shared mount path", e.sb.CreateContainer(bg, ContainerConfig{ID: newID(), Spec: ocispec.ToSpec(as),
		SharedMounts: []SharedMount{{Name: "x", SrcCtr: "sidecar", SrcPath: "mnt", DstCtr: "app", DstPath: "/data"}}}), errdefs.ErrInvalidArgument)
}
