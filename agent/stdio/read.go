package stdio

import (
	"context"
	"errors"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/replysplice"
)

// MaxRead caps one read so a reply fits in a ttrpc message (4 MiB).
const MaxRead = 1 << 20

// defaultRead is used when a caller asks for 0 bytes.
const defaultRead = 32 << 10

// Read returns up to n bytes of the stream. It blocks until some output is
// available, then reads what is available, up to n bytes: a host that asks
// for 1 MiB gets what the pipe holds in one reply instead of one read(2)
// per RPC, and it never waits for more once it has some. io.EOF means the
// stream is finished (or Close was called).
func (s *Streams) Read(ctx context.Context, which Stream, n int) ([]byte, error) {
	b, _, err := s.read(ctx, which, n, false)
	return b, err
}

// ReadSpliceable is Read for a caller that can send output from the pipe
// itself (replysplice): a pipe holding at least minSplice bytes is not read
// here, and up to n of its bytes come back as pipe instead of data. The
// stream stays locked to other readers until pipe is closed.
func (s *Streams) ReadSpliceable(ctx context.Context, which Stream, n int) (data []byte, pipe *replysplice.Pipe, err error) {
	return s.read(ctx, which, n, true)
}

func (s *Streams) read(ctx context.Context, which Stream, n int, spliceable bool) ([]byte, *replysplice.Pipe, error) {
	f, rc, capacity, fixed, mu := s.stdout, s.outRC, &s.outCap, &s.outFixed, s.outMu
	if which == Stderr {
		f, rc, capacity, fixed, mu = s.stderr, s.errRC, &s.errCap, &s.errFixed, s.errMu
	}
	if f == nil {
		// A terminal merges stderr into stdout.
		return nil, nil, io.EOF
	}
	switch {
	case n <= 0:
		n = defaultRead
	case n > MaxRead:
		n = MaxRead
	}
	if err := mu.lock(ctx); err != nil {
		return nil, nil, err
	}
	locked := true
	defer func() {
		if locked {
			mu.unlock()
		}
	}()

	b, pipe, err := s.readAvailable(ctx, f, rc, n, *capacity, mu, spliceable)
	got := len(b)
	if pipe != nil {
		got = pipe.Len()
	}
	if !*fixed && *capacity > 0 && got >= *capacity && n > *capacity {
		growPipe(rc, n, capacity, fixed)
	}
	if pipe != nil {
		// Closing pipe, once its bytes are sent, unlocks mu.
		locked = false
		return nil, pipe, nil
	}
	if len(b) > 0 {
		// An error after some bytes is seen again by the next read.
		return b, nil, nil
	}
	switch {
	case err == nil:
		return nil, nil, io.EOF
	case errors.Is(err, os.ErrDeadlineExceeded):
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, nil, ctxErr
		}
		return nil, nil, io.EOF // drain window passed without data
	case s.closed.Load(), errors.Is(err, os.ErrClosed), errors.Is(err, unix.EIO):
		// EIO: a pty master whose slave side is gone.
		return nil, nil, io.EOF
	default:
		return nil, nil, err
	}
}

// readAvailable waits (bounded by ctx, and by the drain window once the
// process has exited) until f is readable, then reads what is available up
// to n bytes. The reply buffer is sized from FIONREAD, so a large n on a
// nearly empty (or large) pipe does not allocate n bytes. Empty data with
// a nil error is EOF. With spliceable set, a pipe holding at least
// minSplice bytes is held (up to n of them) rather than read.
//
// Every RPC has its own ctx, cancelled when the RPC returns: the deadline
// setters are disarmed under a lock before readAvailable returns, so a
// late one can never cut a later read short.
func (s *Streams) readAvailable(ctx context.Context, f *os.File, rc syscall.RawConn, n, capacity int, mu readerLock, spliceable bool) ([]byte, *replysplice.Pipe, error) {
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		return nil, nil, err
	}
	g := &deadlineGuard{set: f.SetReadDeadline}
	if s.exited.Err() != nil {
		g.setDeadline(time.Now().Add(DrainWindow))
	} else {
		stopExit := context.AfterFunc(s.exited, func() { g.setDeadline(time.Now().Add(DrainWindow)) })
		defer stopExit()
	}
	stopCtx := context.AfterFunc(ctx, func() { g.setDeadline(time.Now()) })
	defer stopCtx()
	defer g.disarm()

	var (
		buf  []byte
		pipe *replysplice.Pipe
		rerr error
		eof  bool
	)
	err := rc.Read(func(fd uintptr) bool {
		// TIOCINQ is FIONREAD: the bytes a read would return now.
		avail, aerr := unix.IoctlGetInt(int(fd), unix.TIOCINQ)
		if spliceable && capacity > 0 && aerr == nil {
			if pipe = hold(int(fd), n, avail, mu); pipe != nil {
				return true
			}
		}
		buf, eof, rerr = readNonblocking(ctx, int(fd), n, capacity, avail, aerr)
		// Wait for readability only while nothing was read.
		return len(buf) > 0 || eof || rerr != nil
	})
	if pipe != nil {
		return nil, pipe, nil
	}
	if err == nil {
		err = rerr
	}
	return buf, nil, err
}

// minSplice is the least a pipe must hold for its bytes to be spliced
// rather than read. Small replies (an interactive shell's lines) cost
// little to copy, and the splice adds three syscalls (dup, splice, close);
// from 32 KiB up BenchmarkPipeReply measures the splice as fast or faster.
const minSplice = 16 << 10

// hold hands over up to n of the avail bytes the pipe fd holds, when there
// are at least minSplice (replysplice); closing the Pipe releases the
// stream's lock mu. It returns nil when the bytes are to be read instead.
func hold(fd, n, avail int, mu readerLock) *replysplice.Pipe {
	if n < minSplice || avail < minSplice {
		return nil
	}
	p, err := replysplice.Hold(fd, min(n, avail), mu.unlock)
	if err != nil {
		return nil // out of descriptors: read the bytes instead
	}
	return p
}

// growPipe raises the capacity of a pipe that was found full by a read
// asking for more than it holds, to the read's size (a power of two, at
// most MaxRead), and records the new capacity in *capacity. Such a host
// reads as fast as the output comes, and the capacity bounds what one
// round trip can carry: 256 KiB pipes took four ReadStdout calls per MiB
// where the host asked for 1 MiB (docs/perf/stdout.md). A pipe only grows
// for a reader that keeps up, so output nobody reads still pins no more
// than the configured size. A failure (the kernel's pipe-max-size, the
// user's pipe quota) sets *fixed, and the pipe keeps its size.
func growPipe(rc syscall.RawConn, n int, capacity *int, fixed *bool) {
	want := MaxRead
	for want/2 >= n && want/2 > *capacity {
		want /= 2
	}
	var grown int
	err := rc.Control(func(fd uintptr) {
		var ferr error
		grown, ferr = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, want)
		if ferr != nil {
			grown = 0
		}
	})
	if err != nil || grown <= *capacity {
		*fixed = true
		return
	}
	*capacity = grown
}

// probeRead is how much a read of a stream that looks empty asks for: it
// tells data from EAGAIN and EOF without a buffer of the caller's size.
const probeRead = 512

// readNonblocking reads what fd holds now, up to n bytes, without blocking,
// into a reply buffer for ctx (see replyBuffer). The read is sized from
// FIONREAD (avail, or availErr when the ioctl failed), so a large n on a
// nearly empty (or large) pipe or pty takes only the buffer it returns. It keeps reading
// only until it has what FIONREAD promised (a pty may return it in pieces)
// and does not chase a writer that refills the pipe meanwhile: on this
// path that bought bigger replies but cost more CPU per byte than it
// saved in round trips (docs/perf/stdout.md). It reports eof when no
// writer is left and nothing is buffered; an EAGAIN with nothing read
// returns an empty buffer and eof false.
func readNonblocking(ctx context.Context, fd int, n, capacity, avail int, availErr error) (_ []byte, eof bool, _ error) {
	size := n
	if availErr == nil && avail > 0 {
		size = min(size, avail)
	} else if availErr == nil {
		size = min(size, probeRead)
	} else if capacity > 0 {
		size = min(size, capacity) // one read never returns more than the pipe holds
	}
	buf := replyBuffer(ctx, size)
	got := 0
	for got < size {
		m, err := unix.Read(fd, buf[got:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return buf[:got], false, nil
		case err != nil:
			if got > 0 {
				return buf[:got], false, nil // reported by the next read
			}
			return nil, false, err
		case m == 0:
			return buf[:got], got == 0, nil
		}
		got += m
	}
	return buf, false, nil
}
