package server

import (
	"errors"
	"fmt"
	"io"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/wren-vm/wren/agent/replysplice"
)

// sendBuffer is the send buffer asked for on every connection: one
// ReadStdout reply of MaxRead (1 MiB) then fits in the socket whole. With
// the default (208 KiB on Linux) the server filled the socket, waited for
// the reader, and went round again five times per reply, and each turn
// woke both sides. Figure 7, 1 MiB reads with the ReadStream client, same
// run: 936 -> 1312 MB/s, agent CPU per MiB 0.49 -> 0.31 ms, client 0.62 ->
// 0.45 ms (docs/perf/stdout.md). The kernel charges the buffer only while
// bytes wait in it.
const sendBuffer = 1 << 20

// raiseSendBuffer sets the socket's send buffer to sendBuffer, past the
// system's wmem_max where the agent may (CAP_NET_ADMIN, as PID 1 has), and
// leaves the default where neither option is allowed.
func raiseSendBuffer(raw syscall.RawConn) {
	// Best effort: a smaller buffer costs throughput, not correctness.
	_ = raw.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sendBuffer) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, sendBuffer)
		}
	})
}

// sendSpliced sends r: its message, then its field holding the bytes of
// its pipe. The frame up to the field's length is marshalled as usual; the
// bytes go from the pipe to the socket with splice(2), or are copied where
// the connection is not a socket that can take them.
func (c *conn) sendSpliced(id uint32, r *replysplice.Reply) error {
	field, err := r.Number()
	if err != nil {
		return status.Errorf(codes.Internal, "ttrpc: %v", err)
	}
	src, n := r.Data.Fd(), r.Data.Len()
	head := protowire.SizeTag(field) + protowire.SizeVarint(uint64(n))
	bp, err := marshalReply(id, r.Message, head+n)
	if err != nil {
		return err
	}
	defer putFrameBuf(bp)
	b := protowire.AppendTag(*bp, field, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	*bp = b

	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.nc.Write(b); err != nil {
		c.writeFailed(err)
		return nil
	}
	moved := 0
	err = unix.EINVAL
	if c.raw != nil {
		moved, err = c.splice(src, n)
	}
	if errors.Is(err, unix.EINVAL) && moved == 0 {
		// This pair of files cannot splice (no socket beneath the
		// connection, or a kernel without splice to this socket family):
		// copy instead.
		err = c.copyFrom(src, n)
	}
	if err != nil {
		// The frame is cut short; the connection cannot go on.
		c.writeFailed(fmt.Errorf("splice reply data: %w", err))
	}
	return nil
}

// splice moves n bytes from the pipe src into the connection's socket,
// waiting in the poller while the socket is full. It is called with wmu
// held, and the Pipe's contract guarantees that src holds at least n bytes.
func (c *conn) splice(src, n int) (moved int, err error) {
	var opErr error
	err = c.raw.Write(func(sock uintptr) bool {
		for moved < n {
			m, err := unix.Splice(src, nil, int(sock), nil, n-moved, unix.SPLICE_F_NONBLOCK)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				// Either the socket is full or, against the Pipe's
				// contract, the pipe is empty; only the first is worth
				// waiting for.
				if avail, ierr := unix.IoctlGetInt(src, unix.TIOCINQ); ierr != nil || avail == 0 {
					opErr = fmt.Errorf("pipe ran dry after %d of %d held bytes", moved, n)
					return true
				}
				return false
			case err != nil:
				opErr = err
				return true
			case m == 0:
				opErr = io.ErrUnexpectedEOF
				return true
			}
			moved += int(m)
		}
		return true
	})
	if err == nil {
		err = opErr
	}
	return moved, err
}

// copyFrom is splice's fallback: it reads the n bytes from src and writes
// them to the connection.
func (c *conn) copyFrom(src, n int) error {
	bp := frameBuf(min(n, maxKeptBuf))
	defer putFrameBuf(bp)
	buf := (*bp)[:cap(*bp)]
	for n > 0 {
		m, err := unix.Read(src, buf[:min(n, len(buf))])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("read held bytes: %w", err)
		case m == 0:
			return io.ErrUnexpectedEOF
		}
		if _, err := c.nc.Write(buf[:m]); err != nil {
			return err
		}
		n -= m
	}
	return nil
}
