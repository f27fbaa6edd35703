package container

import (
	"syscall"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// collectThroughHandle returns the function the reaper uses to reap an
// exec'd process: libcontainer holds an os.Process for it (os.FindProcess of
// the final nsexec child), and since Go 1.23 that keeps a pidfd open until
// the process is waited for through it or the garbage collector finds it.
// Reaping with wait4 alone left one fd per exec until the next GC; when few
// allocations happen that is thousands of fds. lp.Wait reaps the zombie
// through the pidfd and closes it. The init is not collected this way:
// libcontainer keeps using its handle for the container's lifetime.
func collectThroughHandle(lp *libcontainer.Process) func() (unix.WaitStatus, bool) {
	return func() (unix.WaitStatus, bool) {
		// Called only once the process is a zombie, so this does not block;
		// stdio is *os.File, so exec.Cmd has no copy goroutines to await.
		st, _ := lp.Wait()
		if st == nil {
			return 0, false
		}
		ws, ok := st.Sys().(syscall.WaitStatus)
		return unix.WaitStatus(ws), ok
	}
}
