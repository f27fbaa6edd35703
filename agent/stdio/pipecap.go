package stdio

import (
	"os"

	"golang.org/x/sys/unix"
)

// pipeCapacity is the capacity of the pipe f reads from, or 0 when f is
// not a pipe (a pty). One read of a pipe never returns more than the pipe
// holds, so a reply buffer sized to the request rather than to the pipe is
// zeroed and collected for nothing: a 1 MiB ReadStdout on a 64 KiB pipe
// made 1 MiB of garbage per call (docs/benchmarks.md, figure 7).
func pipeCapacity(f *os.File) int {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0
	}
	size := 0
	if err := rc.Control(func(fd uintptr) {
		if n, err := unix.FcntlInt(fd, unix.F_GETPIPE_SZ, 0); err == nil {
			size = n
		}
	}); err != nil {
		return 0
	}
	return size
}
