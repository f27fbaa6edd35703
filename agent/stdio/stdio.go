// Package stdio holds the standard streams of one container process as the
// agent sees them: pipes (with a configurable pipe size) or a pseudo-terminal
// received through libcontainer's console socket.
//
// Output is pulled by the host with ReadStdout/ReadStderr calls. The kernel
// pipe (or pty) buffer is the only buffer: a slow reader makes the writer
// block instead of losing data. After the process exits, reads keep returning
// what is still buffered and report EOF only once the stream is empty and no
// writer is left, or once no byte has arrived for DrainWindow (a background
// child may keep the stream open forever).
package stdio

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DrainWindow bounds how long a read waits for more output once the process
// has exited but some other process still holds the write end open.
const DrainWindow = 500 * time.Millisecond

// ErrNoTerminal is returned by Resize for a process without a terminal.
var ErrNoTerminal = errors.New("process has no terminal")

// ErrStdinClosed is returned by Write after stdin was closed.
var ErrStdinClosed = errors.New("stdin is closed")

// Stream names a readable stream.
type Stream int

const (
	// Stdout is the process's standard output (or the terminal).
	Stdout Stream = iota
	// Stderr is the process's standard error (empty with a terminal).
	Stderr
)

// Streams is the agent's side of a process's standard streams.
type Streams struct {
	tty bool

	// Child ends, handed to libcontainer and closed after the start.
	childIn, childOut, childErr *os.File
	consoleParent, consoleChild *os.File

	inMu  sync.Mutex
	stdin *os.File // pipe write end or pty master; nil once closed

	outMu, errMu   readerLock // one reader per stream at a time
	stdout, stderr *os.File   // pipe read ends; stdout is the pty master with a tty
	master         *os.File   // the pty master, nil without a tty
	// outCap and errCap are the pipes' capacities (0 for a pty), read
	// once and updated when a pipe grows: a read never needs a bigger
	// buffer than its pipe holds.
	outCap, errCap int
	// outFixed and errFixed are set when growing the pipe failed, so it
	// is not tried again.
	outFixed, errFixed bool
	// outRC and errRC are the read ends' raw conns, made once.
	outRC, errRC syscall.RawConn
	// closed is set before Close closes the agent's ends, so that a read
	// cut short by the close reports EOF rather than an error.
	closed atomic.Bool

	// exited is done once the process has exited (MarkExited); reads
	// then drain with a deadline instead of waiting forever.
	exited     context.Context
	markExited context.CancelFunc

	closeOnce sync.Once
}

// NewPipes creates stdin, stdout and stderr pipes. pipeSize > 0 is applied
// with F_SETPIPE_SZ to each pipe.
func NewPipes(pipeSize int) (_ *Streams, err error) {
	s := newStreams(false)
	defer func() {
		if err != nil {
			s.CloseChildEnds()
			s.Close()
		}
	}()
	// stdin: the child reads, the agent writes.
	if s.childIn, s.stdin, err = newPipe(pipeSize, true); err != nil {
		return nil, fmt.Errorf("stdin pipe: %w", err)
	}
	if s.stdout, s.childOut, err = newPipe(pipeSize, false); err != nil {
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	if s.stderr, s.childErr, err = newPipe(pipeSize, false); err != nil {
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	s.outCap, s.errCap = pipeCapacity(s.stdout), pipeCapacity(s.stderr)
	if s.outRC, err = s.stdout.SyscallConn(); err != nil {
		return nil, err
	}
	if s.errRC, err = s.stderr.SyscallConn(); err != nil {
		return nil, err
	}
	return s, nil
}

// newPipe returns (read end, write end). The agent's end is non-blocking and
// registered with the Go poller (so reads honour deadlines); the child's end
// stays blocking, because a workload that gets EAGAIN on a full stdout often
// loses output.
func newPipe(size int, agentWrites bool) (r, w *os.File, err error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, err
	}
	if size > 0 {
		if _, err := unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, size); err != nil {
			unix.Close(fds[0])
			unix.Close(fds[1])
			return nil, nil, fmt.Errorf("F_SETPIPE_SZ %d: %w", size, err)
		}
	}
	agentFd := fds[0]
	if agentWrites {
		agentFd = fds[1]
	}
	if err := unix.SetNonblock(agentFd, true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, err
	}
	return os.NewFile(uintptr(fds[0]), "pipe-r"), os.NewFile(uintptr(fds[1]), "pipe-w"), nil
}

// NewTerminal prepares a console socket pair; pass ConsoleSocket to
// libcontainer and call ReceiveConsole after the process started.
func NewTerminal() (*Streams, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("console socketpair: %w", err)
	}
	// Never block forever on a console that does not come.
	tv := unix.Timeval{Sec: 30}
	if err := unix.SetsockoptTimeval(fds[0], unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fmt.Errorf("console socket timeout: %w", err)
	}
	s := newStreams(true)
	s.consoleParent = os.NewFile(uintptr(fds[0]), "console-parent")
	s.consoleChild = os.NewFile(uintptr(fds[1]), "console-child")
	return s, nil
}

func newStreams(tty bool) *Streams {
	s := &Streams{tty: tty, outMu: newReaderLock(), errMu: newReaderLock()}
	s.exited, s.markExited = context.WithCancel(context.Background())
	return s
}

// Terminal reports whether the process has a pty.
func (s *Streams) Terminal() bool { return s.tty }

// ChildStdio returns the files to set as libcontainer Process
// Stdin/Stdout/Stderr (nil with a terminal).
func (s *Streams) ChildStdio() (in, out, errf *os.File) {
	return s.childIn, s.childOut, s.childErr
}

// ConsoleSocket returns the socket to set as libcontainer
// Process.ConsoleSocket (nil without a terminal).
func (s *Streams) ConsoleSocket() *os.File { return s.consoleChild }

// CloseChildEnds closes the agent's copies of the child's ends. Call it once
// the process has started (or failed to), so EOF is seen when the process and
// its children close theirs.
func (s *Streams) CloseChildEnds() {
	for _, f := range []**os.File{&s.childIn, &s.childOut, &s.childErr, &s.consoleChild} {
		if *f != nil {
			(*f).Close()
			*f = nil
		}
	}
}

// ReceiveConsole receives the pty master that the started process sent over
// the console socket.
func (s *Streams) ReceiveConsole() error {
	if !s.tty {
		return nil
	}
	defer func() {
		s.consoleParent.Close()
		s.consoleParent = nil
	}()
	master, err := recvFd(s.consoleParent)
	if err != nil {
		return fmt.Errorf("receive console: %w", err)
	}
	if err := unix.SetNonblock(master, true); err != nil {
		unix.Close(master)
		return fmt.Errorf("console nonblock: %w", err)
	}
	f := os.NewFile(uintptr(master), "pty-master")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return fmt.Errorf("console raw conn: %w", err)
	}
	s.master, s.stdout, s.outRC = f, f, rc
	s.inMu.Lock()
	s.stdin = f
	s.inMu.Unlock()
	return nil
}

// recvFd receives one file descriptor sent with SCM_RIGHTS (libcontainer
// sends the pty name as data alongside it).
func recvFd(sock *os.File) (int, error) {
	rc, err := sock.SyscallConn()
	if err != nil {
		return -1, err
	}
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4*4))
	var n, oobn int
	var rerr error
	if err := rc.Control(func(fd uintptr) {
		for {
			n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
			if rerr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return -1, err
	}
	if rerr != nil {
		return -1, fmt.Errorf("recvmsg: %w", rerr)
	}
	_ = n
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return -1, err
	}
	var fds []int
	for i := range msgs {
		if got, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			fds = append(fds, got...)
		}
	}
	if len(fds) == 0 {
		return -1, errors.New("no file descriptor received")
	}
	for _, extra := range fds[1:] {
		unix.Close(extra)
	}
	return fds[0], nil
}

// MarkExited tells the streams that the process has exited: reads switch to
// draining what is left.
func (s *Streams) MarkExited() { s.markExited() }

// deadlineGuard lets asynchronous watchers set a deadline only while the
// operation they watch is still running.
type deadlineGuard struct {
	mu       sync.Mutex
	disarmed bool
	set      func(time.Time) error
}

func (g *deadlineGuard) setDeadline(t time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.disarmed {
		_ = g.set(t) // a watcher has nobody to tell; a file without deadlines just goes on
	}
}

func (g *deadlineGuard) disarm() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.disarmed = true
}

// Write writes all of data to stdin; empty data closes stdin (EOF).
func (s *Streams) Write(ctx context.Context, data []byte) (int, error) {
	if len(data) == 0 {
		return 0, s.CloseStdin()
	}
	s.inMu.Lock()
	f := s.stdin
	s.inMu.Unlock()
	if f == nil {
		return 0, ErrStdinClosed
	}
	if err := f.SetWriteDeadline(time.Time{}); err != nil && !errors.Is(err, os.ErrClosed) {
		return 0, err
	}
	g := &deadlineGuard{set: f.SetWriteDeadline}
	stop := context.AfterFunc(ctx, func() { g.setDeadline(time.Now()) })
	n, err := f.Write(data)
	g.disarm()
	stop()
	if err != nil && ctx.Err() != nil {
		return n, ctx.Err()
	}
	if errors.Is(err, os.ErrClosed) {
		return n, ErrStdinClosed
	}
	return n, err
}

// CloseStdin signals end of input. With a terminal the master cannot be
// half-closed, so the terminal's EOF character is written instead, as a user
// pressing ^D would.
func (s *Streams) CloseStdin() error {
	s.inMu.Lock()
	defer s.inMu.Unlock()
	if s.stdin == nil {
		return nil
	}
	if s.tty {
		_, err := s.stdin.Write([]byte{4})
		s.stdin = nil
		return err
	}
	err := s.stdin.Close()
	s.stdin = nil
	return err
}

// Resize sets the terminal window size.
func (s *Streams) Resize(rows, cols uint16) error {
	if s.master == nil {
		return ErrNoTerminal
	}
	rc, err := s.master.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	}); err != nil {
		return err
	}
	if ierr != nil {
		return fmt.Errorf("TIOCSWINSZ: %w", ierr)
	}
	return nil
}

// Close releases every agent-side descriptor. Blocked reads return EOF.
func (s *Streams) Close() {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.inMu.Lock()
		if s.stdin != nil && s.stdin != s.master {
			s.stdin.Close()
		}
		s.stdin = nil
		s.inMu.Unlock()
		for _, f := range []*os.File{s.stdout, s.stderr, s.master, s.consoleParent} {
			if f != nil {
				f.Close()
			}
		}
		s.MarkExited()
	})
}
