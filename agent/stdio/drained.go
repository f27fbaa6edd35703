package stdio

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// Drained reports whether stdout and stderr are both pipes that hold no
// data and have no writer left, so that every further read would return
// EOF at once. It reads nothing: it polls both read ends. A terminal, or a
// pipe that a background child still holds open, is never drained.
func (s *Streams) Drained() bool {
	if s.tty || s.closed.Load() || s.stdout == nil || s.stderr == nil {
		return false
	}
	return atEOF(s.outRC) && atEOF(s.errRC)
}

// atEOF polls a pipe's read end without waiting: POLLHUP without POLLIN
// means no writer is left and nothing is buffered.
func atEOF(rc syscall.RawConn) bool {
	eof := false
	err := rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, 0)
			if err == unix.EINTR {
				continue
			}
			eof = err == nil && n == 1 && fds[0].Revents&unix.POLLHUP != 0 && fds[0].Revents&unix.POLLIN == 0
			return
		}
	})
	return err == nil && eof
}
