package mainthread

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/internal/testroot"
)

// TestNamespaceChangesNeverReachTheMainThread does what libcontainer does
// on every container start (lock a thread, change its namespace, return
// without unlocking) many times over, with the test binary's main
// goroutine parked as the agent's is, and checks that the main thread is
// still in the namespace it started in. The test binary's main goroutine
// runs this package's initializer like the agent's does.
func TestNamespaceChangesNeverReachTheMainThread(t *testing.T) {
	testroot.Require(t, "unshare(CLONE_NEWUTS)")
	mainUTS := fmt.Sprintf("/proc/%d/task/%d/ns/uts", os.Getpid(), os.Getpid())
	want, err := os.Readlink(mainUTS)
	if err != nil {
		t.Fatal(err)
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // the agent's setting
	for round := 0; round < 20; round++ {
		var wg sync.WaitGroup
		errs := make(chan error, 10)
		for i := 0; i < 10; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread()
				// No unlock: the runtime ends this thread when we return.
				if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("unshare: %v", err)
		}
		if got, err := os.Readlink(mainUTS); err != nil || got != want {
			t.Fatalf("after %d rounds the main thread is in %s (%v), it started in %s", round+1, got, err, want)
		}
	}
}
