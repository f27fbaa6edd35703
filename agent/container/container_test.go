package container

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/cgroups"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/reaper"
	"github.com/wren-vm/wren/agent/stdio"
	"github.com/wren-vm/wren/internal/leakcheck"
	"github.com/wren-vm/wren/internal/testbundle"
)

var (
	testReaper   *reaper.Reaper
	cgroupParent string
	seq          atomic.Int64
)

func TestMain(m *testing.M) {
	testbundle.ContainerMain(m, InitHook, "wren-ctest", func(r *reaper.Reaper, parent string) {
		testReaper, cgroupParent = r, parent
	})
}

// cgroupDirs are where the container's cgroups live on this host.
func cgroupDirs(id string) []string { return testbundle.CgroupDirs(cgroupParent, id) }

type fixture struct {
	t     *testing.T
	state string
}

func newFixture(t *testing.T) *fixture {
	return &fixture{t: t, state: t.TempDir()}
}

func (f *fixture) spec(args ...string) (string, *specs.Spec) {
	id := fmt.Sprintf("c%d", seq.Add(1))
	root := testbundle.Rootfs(f.t, filepath.Join(f.t.TempDir(), "rootfs"))
	s := testbundle.Spec(root, args...)
	s.Linux.CgroupsPath = "/" + cgroupParent + "/" + id
	return id, s
}

func (f *fixture) create(id string, s *specs.Spec, onOOM func(string)) *Container {
	f.t.Helper()
	c, err := Create(context.Background(), Config{
		ID: id, Spec: s, StateDir: filepath.Join(f.state, "lc"),
		Reaper: testReaper, PipeSize: 1 << 16, OnOOM: onOOM,
		NoPivotRoot: RootIsInitramfs(),
	})
	if err != nil {
		f.t.Fatalf("create %s: %v", id, err)
	}
	f.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := c.Destroy(ctx); err != nil {
			f.t.Errorf("destroy %s: %v", id, err)
		}
	})
	return c
}

func (f *fixture) run(args ...string) (*Container, string) {
	f.t.Helper()
	id, s := f.spec(args...)
	c := f.create(id, s, nil)
	if err := c.Start(context.Background()); err != nil {
		f.t.Fatalf("start: %v", err)
	}
	return c, id
}

func readAll(t *testing.T, c *Container, execID string, which stdio.Stream) string {
	t.Helper()
	var out []byte
	for {
		b, err := c.Read(context.Background(), execID, which, 32<<10)
		if errors.Is(err, io.EOF) {
			return string(out)
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		out = append(out, b...)
	}
}

func wait(t *testing.T, c *Container, execID string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, err := c.Wait(ctx, execID)
	if err != nil {
		t.Fatalf("wait %q: %v", execID, err)
	}
	return code
}

func TestRunToExitWithOutput(t *testing.T) {
	f := newFixture(t)
	c, _ := f.run("/bin/sh", "-c", "echo hello; hostname; echo oops >&2; exit 3")
	if got := wait(t, c, ""); got != 3 {
		t.Errorf("exit code %d, want 3", got)
	}
	if got := readAll(t, c, "", stdio.Stdout); got != "hello\nwren-test\n" {
		t.Errorf("stdout %q", got)
	}
	if got := readAll(t, c, "", stdio.Stderr); got != "oops\n" {
		t.Errorf("stderr %q", got)
	}
}

func TestInitWaitsForStart(t *testing.T) {
	f := newFixture(t)
	id, s := f.spec("/bin/sh", "-c", "echo started")
	c := f.create(id, s, nil)
	st, _ := c.Status()
	if st.String() != "created" {
		t.Fatalf("status after create %s, want created", st)
	}
	select {
	case <-c.Init().Exited():
		t.Fatal("init ran before Start")
	case <-time.After(100 * time.Millisecond):
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); !errors.Is(err, ErrState) {
		t.Errorf("second start: %v, want ErrState", err)
	}
	if got := readAll(t, c, "", stdio.Stdout); got != "started\n" {
		t.Errorf("stdout %q", got)
	}
	if got := wait(t, c, ""); got != 0 {
		t.Errorf("exit %d", got)
	}
}

func TestSignalKillAndTermUpgrade(t *testing.T) {
	f := newFixture(t)
	c, _ := f.run("/bin/sleep", "1000")
	// sleep as PID 1 does not handle SIGTERM: it must become SIGKILL.
	if err := c.Signal(context.Background(), "", unix.SIGTERM, false); err != nil {
		t.Fatal(err)
	}
	if got := wait(t, c, ""); got != 137 {
		t.Errorf("exit %d, want 137", got)
	}
	// A shell that traps TERM gets TERM.
	c2, _ := f.run("/bin/sh", "-c", "trap 'echo term; exit 4' TERM; echo ready; while :; do sleep 0.05; done")
	if b, err := c2.Read(context.Background(), "", stdio.Stdout, 6); err != nil || string(b) != "ready\n" {
		t.Fatalf("ready: %q %v", b, err)
	}
	if err := c2.Signal(context.Background(), "", unix.SIGTERM, false); err != nil {
		t.Fatal(err)
	}
	if got := wait(t, c2, ""); got != 4 {
		t.Errorf("trapped TERM: exit %d, want 4", got)
	}
}

func TestExecWithAndWithoutTTY(t *testing.T) {
	f := newFixture(t)
	c, _ := f.run("/bin/sleep", "1000")
	_, err := c.Exec(context.Background(), "e1", &specs.Process{Args: []string{"/bin/sh", "-c", "echo $((6*7)); cat /proc/1/cmdline"}, Env: []string{"PATH=/bin"}, Cwd: "/"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, c, "e1", stdio.Stdout); got != "42\n/bin/sleep\x001000\x00" {
		t.Errorf("exec stdout %q", got)
	}
	if got := readAll(t, c, "e1", stdio.Stderr); got != "" {
		t.Errorf("exec stderr %q", got)
	}
	if got := wait(t, c, "e1"); got != 0 {
		t.Errorf("exec exit %d", got)
	}
	if _, err := c.Exec(context.Background(), "e1", &specs.Process{Args: []string{"/bin/true"}, Cwd: "/"}, nil); err != nil {
		t.Errorf("exec id reusable once waited and drained: %v", err)
	}

	tp, err := c.Exec(context.Background(), "tty", &specs.Process{Terminal: true, Args: []string{"/bin/sh", "-c", "test -t 0 && echo isatty; read line; echo got:$line; stty size"}, Env: []string{"PATH=/bin"}, Cwd: "/"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Streams.Resize(33, 101); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Streams.Write(context.Background(), []byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	out := readAll(t, c, "tty", stdio.Stdout)
	for _, want := range []string{"isatty", "got:ping", "33 101"} {
		if !strings.Contains(out, want) {
			t.Errorf("tty output %q lacks %q", out, want)
		}
	}
	if got := wait(t, c, "tty"); got != 0 {
		t.Errorf("tty exec exit %d", got)
	}
}

func TestStdinRoundTrip(t *testing.T) {
	f := newFixture(t)
	c, _ := f.run("/bin/sh", "-c", "tr a-z A-Z; echo done")
	if _, err := c.Init().Streams.Write(context.Background(), []byte("round trip\n")); err != nil {
		t.Fatal(err)
	}
	if err := c.Init().Streams.CloseStdin(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, c, "", stdio.Stdout); got != "ROUND TRIP\ndone\n" {
		t.Errorf("stdout %q", got)
	}
	if got := wait(t, c, ""); got != 0 {
		t.Errorf("exit %d", got)
	}
}

func TestLargeStdoutNothingLost(t *testing.T) {
	f := newFixture(t)
	// The container writes 64 MiB and prints its checksum on stderr; the
	// reader checks both after the exit (the tail must survive the exit).
	c, _ := f.run("/bin/sh", "-c", "head -c 67108864 /dev/urandom > /tmp/data; sha256sum /tmp/data >&2; cat /tmp/data")
	h := sha256.New()
	var n int64
	for {
		b, err := c.Read(context.Background(), "", stdio.Stdout, 1<<20)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		h.Write(b)
		n += int64(len(b))
	}
	stderr := readAll(t, c, "", stdio.Stderr)
	if n != 64<<20 {
		t.Fatalf("read %d bytes, want %d", n, 64<<20)
	}
	if want := fmt.Sprintf("%x", h.Sum(nil)); !strings.HasPrefix(stderr, want) {
		t.Errorf("checksum: read %s, container says %q", want, stderr)
	}
	if got := wait(t, c, ""); got != 0 {
		t.Errorf("exit %d", got)
	}
}

func TestPauseResume(t *testing.T) {
	f := newFixture(t)
	c, _ := f.run("/bin/sh", "-c", "while :; do echo tick; sleep 0.02; done")
	if err := c.Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	st, _ := c.Status()
	if st.String() != "paused" {
		t.Fatalf("status %s, want paused", st)
	}
	if err := c.Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Resume(context.Background()); !errors.Is(err, ErrState) {
		t.Errorf("resume running: %v, want ErrState", err)
	}
	if b, err := c.Read(context.Background(), "", stdio.Stdout, 5); err != nil || len(b) == 0 {
		t.Fatalf("no output after resume: %q %v", b, err)
	}
}

func TestUpdateMemoryAndStats(t *testing.T) {
	f := newFixture(t)
	c, id := f.run("/bin/sh", "-c", "head -c 8388608 /dev/zero > /tmp/f; while :; do sleep 1; done")
	limit := int64(96 << 20)
	if err := c.Update(context.Background(), &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", cgroupParent, id, "memory.limit_in_bytes"))
	if err != nil {
		t.Skipf("no v1 memory cgroup here: %v", err)
	}
	if got, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); got != limit {
		t.Errorf("memory.limit_in_bytes = %d, want %d", got, limit)
	}
	var st = waitStats(t, c)
	if st.MemoryStats.Usage.Usage == 0 || st.PidsStats.Current == 0 || st.CpuStats.CpuUsage.TotalUsage == 0 {
		t.Errorf("stats have zero counters: mem %d pids %d cpu %d", st.MemoryStats.Usage.Usage, st.PidsStats.Current, st.CpuStats.CpuUsage.TotalUsage)
	}
	if st.MemoryStats.Usage.Limit != uint64(limit) {
		t.Errorf("stats memory limit %d, want %d", st.MemoryStats.Usage.Limit, limit)
	}
}

// TestUpdateRefusals: a memory limit no process can live in is ErrInvalid
// and leaves the running container and its limit alone; any update of a
// stopped container is ErrState.
func TestUpdateRefusals(t *testing.T) {
	f := newFixture(t)
	c, id := f.run("/bin/sleep", "1000")
	limitFile := filepath.Join("/sys/fs/cgroup/memory", cgroupParent, id, "memory.limit_in_bytes")
	before, err := os.ReadFile(limitFile)
	if err != nil {
		t.Fatalf("v1 memory cgroup of the container: %v", err)
	}
	for _, n := range []int64{1, 4096, 1 << 20, MinMemoryLimit - 1} {
		limit := n
		err := c.Update(context.Background(), &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("memory limit %d: %v, want ErrInvalid", n, err)
		}
		swap := n
		big := int64(64 << 20)
		err = c.Update(context.Background(), &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &big, Swap: &swap}})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("memory+swap limit %d: %v, want ErrInvalid", n, err)
		}
	}
	if after, _ := os.ReadFile(limitFile); string(after) != string(before) {
		t.Errorf("memory.limit_in_bytes changed by refused updates: %q, was %q", after, before)
	}
	if st, _ := c.Status(); st.String() != "running" {
		t.Fatalf("container %s after refused updates, want running", st)
	}
	// The floor itself is a limit a container can have.
	floor := int64(MinMemoryLimit)
	if err := c.Update(context.Background(), &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &floor}}); err != nil {
		t.Errorf("memory limit %d: %v", floor, err)
	}

	stopped, _ := f.run("/bin/true")
	wait(t, stopped, "")
	limit := int64(64 << 20)
	if err := stopped.Update(context.Background(), &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}); !errors.Is(err, ErrState) {
		t.Errorf("update of a stopped container: %v, want ErrState", err)
	}
}

func waitStats(t *testing.T, c *Container) *cgroups.Stats {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		st, err := c.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.MemoryStats.Usage.Usage > 4<<20 || time.Now().After(deadline) {
			return st
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestOOMEvent(t *testing.T) {
	f := newFixture(t)
	id, s := f.spec("/bin/sh", "-c", "head -c 134217728 /dev/zero | tail")
	limit := int64(32 << 20)
	s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &limit}
	ooms := make(chan string, 4)
	// OnOOM must not block: a v1 memory cgroup may report more kills than
	// the channel holds (every process of the pipeline can be killed).
	c := f.create(id, s, func(id string) {
		select {
		case ooms <- id:
		default:
		}
	})
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ooms:
		if got != id {
			t.Errorf("OOM for %q, want %q", got, id)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no OOM event")
	}
	if code := wait(t, c, ""); code == 0 {
		t.Errorf("exit 0 after OOM")
	}
}

func TestKillAll(t *testing.T) {
	f := newFixture(t)
	c, _ := f.run("/bin/sh", "-c", "trap '' TERM; sleep 1000 & sleep 1000 & echo up; wait")
	if b, err := c.Read(context.Background(), "", stdio.Stdout, 3); err != nil || string(b) != "up\n" {
		t.Fatalf("%q %v", b, err)
	}
	if _, err := c.Exec(context.Background(), "x", &specs.Process{Args: []string{"/bin/sleep", "1000"}, Cwd: "/"}, nil); err != nil {
		t.Fatal(err)
	}
	if pids, _ := c.Processes(); len(pids) < 4 {
		t.Fatalf("processes %v, want at least 4", pids)
	}
	if err := c.Signal(context.Background(), "", unix.SIGKILL, true); err != nil {
		t.Fatal(err)
	}
	if got := wait(t, c, ""); got != 137 {
		t.Errorf("init exit %d, want 137", got)
	}
	if got := wait(t, c, "x"); got != 137 {
		t.Errorf("exec exit %d, want 137", got)
	}
	if pids, _ := c.Processes(); len(pids) != 0 {
		t.Errorf("processes left: %v", pids)
	}
}

func TestExecIntoStoppedContainer(t *testing.T) {
	f := newFixture(t)
	c, _ := f.run("/bin/true")
	wait(t, c, "")
	if _, err := c.Exec(context.Background(), "late", &specs.Process{Args: []string{"/bin/true"}, Cwd: "/"}, nil); !errors.Is(err, ErrState) {
		t.Errorf("exec into stopped: %v, want ErrState", err)
	}
	if _, err := c.Process("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown exec id: %v", err)
	}
}

// Create failures and destroy with processes running leave nothing behind.
func TestNothingLeftBehind(t *testing.T) {
	f := newFixture(t)
	snap := leakcheck.Take(t)
	id, s := f.spec("/bin/sleep", "1000")
	c, err := Create(context.Background(), Config{ID: id, Spec: s, StateDir: filepath.Join(f.state, "lc"), Reaper: testReaper})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(context.Background(), "x", &specs.Process{Args: []string{"/bin/sleep", "1000"}, Cwd: "/"}, nil); err != nil {
		t.Fatal(err)
	}
	// A duplicate id fails and must not disturb the first container.
	if _, err := Create(context.Background(), Config{ID: id, Spec: s, StateDir: filepath.Join(f.state, "lc"), Reaper: testReaper}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate: %v, want ErrExists", err)
	}
	if err := c.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A spec whose process cannot start (no such binary) fails cleanly.
	id2, s2 := f.spec("/no/such/binary")
	if c2, err := Create(context.Background(), Config{ID: id2, Spec: s2, StateDir: filepath.Join(f.state, "lc"), Reaper: testReaper}); err == nil {
		// runc reports a missing binary at start, not at create.
		if err := c2.Start(context.Background()); err == nil {
			wait(t, c2, "")
		}
		if err := c2.Destroy(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// Bad specs are refused before anything is made.
	id3, s3 := f.spec("/bin/true")
	s3.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_BOGUS"}}
	if _, err := Create(context.Background(), Config{ID: id3, Spec: s3, StateDir: filepath.Join(f.state, "lc"), Reaper: testReaper}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad rlimit: %v, want ErrInvalid", err)
	}
	snap.Check(t, append(append(cgroupDirs(id), cgroupDirs(id2)...), cgroupDirs(id3)...)...)
}

// An exec that was waited for but whose output nobody reads must not pin
// its pipes forever; one whose reader is still draining must lose nothing.
func TestUnreadExecOutputIsReleased(t *testing.T) {
	old := UnreadOutputLinger
	UnreadOutputLinger = 300 * time.Millisecond
	t.Cleanup(func() { UnreadOutputLinger = old })

	f := newFixture(t)
	c, _ := f.run("/bin/sleep", "1000")
	before := openFDs(t)
	for _, id := range []string{"a", "b", "c"} {
		if _, err := c.Exec(context.Background(), id, &specs.Process{Args: []string{"/bin/sh", "-c", "echo unread"}, Env: []string{"PATH=/bin"}, Cwd: "/"}, nil); err != nil {
			t.Fatal(err)
		}
		wait(t, c, id)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, errA := c.Process("a")
		_, errC := c.Process("c")
		if errors.Is(errA, ErrNotFound) && errors.Is(errC, ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("unread execs still held after the linger: %v %v", errA, errC)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if after := openFDs(t); after > before {
		t.Errorf("fds %d -> %d after unread execs were released", before, after)
	}

	// A reader that keeps reading past the linger gets every byte (the
	// output fits the pipe, so the exec can exit before it is read).
	if _, err := c.Exec(context.Background(), "slow", &specs.Process{Args: []string{"/bin/sh", "-c", "seq 1 5000"}, Env: []string{"PATH=/bin"}, Cwd: "/"}, nil); err != nil {
		t.Fatal(err)
	}
	wait(t, c, "slow")
	var out []byte
	for {
		b, err := c.Read(context.Background(), "slow", stdio.Stdout, 1024)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("slow reader cut off after %d bytes: %v", len(out), err)
		}
		out = append(out, b...)
		time.Sleep(60 * time.Millisecond) // the whole read outlasts the linger
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 5000 || lines[4999] != "5000" {
		t.Fatalf("slow reader got %d lines", len(lines))
	}
}

// An exec whose output is empty when it is waited for is freed at once:
// its descriptors close without the linger, reads of it get EOF until the
// linger ends and NotFound after, and its id can be used again.
func TestEmptyExecIsFreedAtItsWait(t *testing.T) {
	old := UnreadOutputLinger
	UnreadOutputLinger = 500 * time.Millisecond
	t.Cleanup(func() { UnreadOutputLinger = old })

	f := newFixture(t)
	c, _ := f.run("/bin/sleep", "1000")
	before := openFDs(t)
	if _, err := c.Exec(context.Background(), "quiet", &specs.Process{Args: []string{"/bin/true"}, Env: []string{"PATH=/bin"}, Cwd: "/"}, nil); err != nil {
		t.Fatal(err)
	}
	wait(t, c, "quiet")
	if _, err := c.Process("quiet"); !errors.Is(err, ErrNotFound) {
		t.Errorf("exec with empty output still held after its wait: %v", err)
	}
	if after := openFDs(t); after > before {
		t.Errorf("fds %d -> %d right after the wait of an exec with empty output", before, after)
	}
	for _, which := range []stdio.Stream{stdio.Stdout, stdio.Stderr} {
		if b, err := c.Read(context.Background(), "quiet", which, 1024); !errors.Is(err, io.EOF) || len(b) != 0 {
			t.Errorf("read of stream %d after the wait: %q, %v; want EOF", which, b, err)
		}
	}
	// An exec with output still lingers with it.
	if _, err := c.Exec(context.Background(), "loud", &specs.Process{Args: []string{"/bin/sh", "-c", "echo kept"}, Env: []string{"PATH=/bin"}, Cwd: "/"}, nil); err != nil {
		t.Fatal(err)
	}
	wait(t, c, "loud")
	if b, err := c.Read(context.Background(), "loud", stdio.Stdout, 1024); err != nil || string(b) != "kept\n" {
		t.Errorf("output of a waited exec: %q, %v", b, err)
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.Read(context.Background(), "quiet", stdio.Stdout, 1024)
		if errors.Is(err, ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("read of the freed exec after the linger: %v, want NotFound", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The id names a new process again, whose output is its own.
	if _, err := c.Exec(context.Background(), "quiet", &specs.Process{Args: []string{"/bin/sh", "-c", "echo again"}, Env: []string{"PATH=/bin"}, Cwd: "/"}, nil); err != nil {
		t.Fatalf("exec id reused after its record expired: %v", err)
	}
	wait(t, c, "quiet")
	if b, err := c.Read(context.Background(), "quiet", stdio.Stdout, 1024); err != nil || string(b) != "again\n" {
		t.Errorf("output of the reused id: %q, %v", b, err)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
