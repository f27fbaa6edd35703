package reaper

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The reaper is per process; these tests share one.
var shared *Reaper

func TestMain(m *testing.M) {
	r, err := New(nil)
	if err != nil {
		panic(err)
	}
	shared = r
	code := m.Run()
	r.Close()
	os.Exit(code)
}

func startCmd(t *testing.T, name string, args ...string) *Exit {
	t.Helper()
	cmd := exec.Command(name, args...)
	e, err := shared.Start(func() (int, error) {
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	})
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	return e
}

func waitCode(t *testing.T, e *Exit) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, err := e.Wait(ctx)
	if err != nil {
		t.Fatalf("wait pid %d: %v", e.Pid(), err)
	}
	return code
}

func TestExitStatuses(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 3", 3},
		{"kill -KILL $$", 137},
		{"kill -TERM $$", 143},
	} {
		e := startCmd(t, "/bin/sh", "-c", tc.script)
		if got := waitCode(t, e); got != tc.want {
			t.Errorf("%q: exit code %d, want %d", tc.script, got, tc.want)
		}
	}
}

// A process that exits immediately still reaches its waiters: Start registers
// the pid before the loop may reap it.
func TestImmediateExitIsNotLost(t *testing.T) {
	for i := 0; i < 50; i++ {
		e := startCmd(t, "/bin/true")
		if got := waitCode(t, e); got != 0 {
			t.Fatalf("run %d: exit code %d", i, got)
		}
	}
}

func TestConcurrentWaitersAllGetStatus(t *testing.T) {
	e := startCmd(t, "/bin/sh", "-c", "sleep 0.1; exit 7")
	var wg sync.WaitGroup
	codes := make([]int, 8)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = e.Wait(context.Background())
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != 7 {
			t.Errorf("waiter %d: code %d, want 7", i, c)
		}
	}
}

func TestWaitHonoursContext(t *testing.T) {
	e := startCmd(t, "/bin/sleep", "30")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := e.Wait(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Wait: %v, want DeadlineExceeded", err)
	}
	if err := unix.Kill(e.Pid(), unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if got := waitCode(t, e); got != 137 {
		t.Fatalf("code %d, want 137", got)
	}
}

// Hold lets exec.Cmd.Wait collect its own child without the loop stealing it.
func TestHoldKeepsOwnWaits(t *testing.T) {
	for i := 0; i < 20; i++ {
		err := shared.Hold(func() error {
			return exec.Command("/bin/sh", "-c", "exit 5").Run()
		})
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 5 {
			t.Fatalf("run %d: %v, want exit status 5", i, err)
		}
	}
}

// Orphans re-parented to the subreaper are reaped, so no zombie remains.
func TestOrphansAreReaped(t *testing.T) {
	e := startCmd(t, "/bin/sh", "-c", "/bin/sleep 0.2 & exit 0")
	if got := waitCode(t, e); got != 0 {
		t.Fatalf("code %d", got)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		kids := children(t)
		if len(kids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("children left: %v", kids)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// children lists the pids (with state) whose parent is this process.
func children(t *testing.T) []string {
	t.Helper()
	self := strconv.Itoa(os.Getpid())
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []string
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == self {
			out = append(out, filepath.Base(filepath.Dir(p))+":"+f[0])
		}
	}
	return out
}

// Code that runs commands with os/exec without Hold still gets their exit
// status: the loop leaves unregistered zombies to their parent code for
// OrphanGrace.
func TestUnregisteredCommandsKeepTheirWait(t *testing.T) {
	for i := 0; i < 20; i++ {
		err := exec.Command("/bin/sh", "-c", "exit 5").Run()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 5 {
			t.Fatalf("run %d: %v, want exit status 5", i, err)
		}
	}
}

// An unregistered zombie in its grace is the one waitid(P_ALL) keeps
// reporting; registered children that exit meanwhile must still be reaped
// (by pid) well before that grace ends, and the unregistered one must stay
// for its own Wait.
func TestRegisteredExitsBehindUnregisteredZombie(t *testing.T) {
	idle := exec.Command("/bin/true")
	if err := idle.Start(); err != nil {
		t.Fatal(err)
	}
	// Let it become a zombie that nobody waits for yet.
	for deadline := time.Now().Add(10 * time.Second); peekZombie(idle.Process.Pid) != idle.Process.Pid; {
		if time.Now().After(deadline) {
			t.Fatal("child did not exit")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i := 0; i < 5; i++ {
		e := startCmd(t, "/bin/sh", "-c", "exit 7")
		ctx, cancel := context.WithTimeout(context.Background(), OrphanGrace/2)
		code, err := e.Wait(ctx)
		cancel()
		if err != nil || code != 7 {
			t.Fatalf("registered child %d: code %d, %v; want 7 before the unregistered zombie's grace ends", i, code, err)
		}
	}
	if err := idle.Wait(); err != nil {
		t.Fatalf("unregistered child's own Wait: %v", err)
	}
}

// peekZombie reports a zombie without reaping it.
func TestPeekZombieDoesNotReap(t *testing.T) {
	err := shared.Hold(func() error {
		cmd := exec.Command("/bin/sh", "-c", "exit 3")
		if err := cmd.Start(); err != nil {
			return err
		}
		pid := cmd.Process.Pid
		for deadline := time.Now().Add(10 * time.Second); peekZombie(pid) != pid; {
			if time.Now().After(deadline) {
				t.Error("child did not show as a zombie")
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if got := peekZombie(pid); got != pid {
			t.Errorf("second peek: %d, want %d", got, pid)
		}
		return cmd.Wait()
	})
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("%v, want exit status 3", err)
	}
	if got := peekZombie(os.Getpid()); got != 0 {
		t.Fatalf("peek at a non-child: %d, want 0", got)
	}
}

// Orphans that exit while an unregistered zombie is in its grace are hidden
// from waitid(P_ALL) behind it; their grace must still start when they exit
// (not one after another), so all of them are gone within two graces.
func TestOrphansBehindUnregisteredZombie(t *testing.T) {
	blocker := exec.Command("/bin/true")
	if err := blocker.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); peekZombie(blocker.Process.Pid) != blocker.Process.Pid; {
		if time.Now().After(deadline) {
			t.Fatal("child did not exit")
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	e := startCmd(t, "/bin/sh", "-c", "/bin/sleep 0.1 & /bin/sleep 0.1 & /bin/sleep 0.1 & exit 0")
	if got := waitCode(t, e); got != 0 {
		t.Fatalf("code %d", got)
	}
	time.Sleep(OrphanGrace/2 - time.Since(start))
	if err := blocker.Wait(); err != nil {
		t.Fatalf("unregistered child's own Wait: %v", err)
	}
	for {
		kids := children(t)
		if len(kids) == 0 {
			return
		}
		if time.Since(start) > 2*OrphanGrace {
			t.Fatalf("orphans still not reaped after %v: %v", time.Since(start).Round(time.Millisecond), kids)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A child started with a handle is reaped through it (so the handle, an
// os.Process pidfd here, is released with it); when collect cannot, the loop
// falls back to wait4 and the status still arrives.
func TestStartWithHandle(t *testing.T) {
	for _, handleWorks := range []bool{true, false} {
		cmd := exec.Command("/bin/sh", "-c", "exit 9")
		collected := false
		e, err := shared.StartWithHandle(func() (int, func() (unix.WaitStatus, bool), error) {
			if err := cmd.Start(); err != nil {
				return 0, nil, err
			}
			return cmd.Process.Pid, func() (unix.WaitStatus, bool) {
				if !handleWorks {
					return 0, false
				}
				st, err := cmd.Process.Wait()
				if err != nil {
					t.Errorf("collect: %v", err)
					return 0, false
				}
				collected = true
				return unix.WaitStatus(st.Sys().(syscall.WaitStatus)), true
			}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := waitCode(t, e); got != 9 {
			t.Fatalf("handle works %v: code %d, want 9", handleWorks, got)
		}
		if collected != handleWorks {
			t.Fatalf("handle works %v: collected through the handle: %v", handleWorks, collected)
		}
		if handleWorks {
			if _, err := cmd.Process.Wait(); err == nil {
				t.Fatal("handle still usable after the child was collected through it")
			}
		}
	}
}
