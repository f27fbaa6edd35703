package container

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/wren-vm/wren/internal/leakcheck"
)

// Every running container is watched for OOM kills. The watch must not cost
// an OS thread per container (libcontainer's NotifyOOM did: 500 sleeping
// containers, 506 agent threads), must report no OOM when a container is
// destroyed, and must end with the container, leaving no goroutine or fd.
func TestOOMWatchDoesNotPinThreads(t *testing.T) {
	const n = 20
	f := newFixture(t)
	var ooms atomic.Int32
	onOOM := func(string) { ooms.Add(1) }
	// libcontainer keeps a few fds open for the life of the process once it
	// has run a container (the cgroup root, /); open them before the snapshot.
	warm, s := f.spec("/bin/true")
	c, err := Create(context.Background(), Config{ID: warm, Spec: s, StateDir: filepath.Join(f.state, "lc"), Reaper: testReaper, OnOOM: onOOM, NoPivotRoot: RootIsInitramfs()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	wait(t, c, "")
	if err := c.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	snap := leakcheck.Take(t)
	var cs []*Container
	var dirs []string
	destroyAll := func() {
		for _, c := range cs {
			if err := c.Destroy(context.Background()); err != nil {
				t.Errorf("destroy %s: %v", c.ID(), err)
			}
		}
		cs = nil
	}
	t.Cleanup(destroyAll) // after a failure; normally a no-op

	before := threadCount(t)
	for range n {
		id, s := f.spec("/bin/sleep", "1000")
		c, err := Create(context.Background(), Config{
			ID: id, Spec: s, StateDir: filepath.Join(f.state, "lc"),
			Reaper: testReaper, OnOOM: onOOM,
			NoPivotRoot: RootIsInitramfs(),
		})
		if err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
		cs = append(cs, c)
		dirs = append(dirs, cgroupDirs(id)...)
		if err := c.Start(context.Background()); err != nil {
			t.Fatalf("start %s: %v", id, err)
		}
		if c.oom == nil {
			t.Fatalf("container %s is not watched for OOM", id)
		}
	}
	after := threadCount(t)
	t.Logf("threads: %d before, %d with %d running containers", before, after, n)
	// The runtime may add a few threads of its own (GC workers, a thread
	// for a blocking syscall during a start); one per container is the bug.
	if after-before >= n/2 {
		t.Errorf("%d running containers added %d threads (%d -> %d)", n, after-before, before, after)
	}

	destroyAll()
	if got := ooms.Load(); got != 0 {
		t.Errorf("%d OOM events for containers that were only destroyed", got)
	}
	snap.Check(t, dirs...)
}

func threadCount(t *testing.T) int {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	return len(tasks)
}
