package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

// DefaultHandshakeTimeout bounds one hybrid vsock handshake when the
// context sets no deadline of its own.
const DefaultHandshakeTimeout = 5 * time.Second

// maxHandshakeLine bounds the reply line; "OK <port>\n" is a few bytes.
const maxHandshakeLine = 64

var errClosedBeforeOK = errors.New("connection closed before OK")

// DialHybridVsock connects to a guest vsock port through a Firecracker /
// Cloud Hypervisor style hybrid vsock socket: it sends "CONNECT <port>\n"
// and waits for a line starting with "OK ". The guest may not be listening
// yet, so refused or dropped attempts are retried with backoff until ctx
// ends; an answer that is not OK fails at once.
func DialHybridVsock(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	var b backoff
	for {
		conn, err := hybridVsockAttempt(ctx, udsPath, port)
		if err == nil {
			return conn, nil
		}
		if !retryable(err) {
			return nil, fmt.Errorf("hybrid vsock %s port %d: %w", udsPath, port, err)
		}
		if werr := b.wait(ctx); werr != nil {
			return nil, fmt.Errorf("hybrid vsock %s port %d: %w (last attempt: %w)", udsPath, port, werr, err)
		}
	}
}

func hybridVsockAttempt(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", udsPath)
	if err != nil {
		return nil, withoutOp(err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(DefaultHandshakeTimeout)
	}
	// Closing the connection when ctx ends unblocks the read below.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if err := conn.SetDeadline(deadline); err != nil {
		conn.Close()
		return nil, err
	}
	if err := handshake(conn, port); err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if ok { // the socket deadline is the context's, a hair early
				return nil, fmt.Errorf("no answer to CONNECT: %w", context.DeadlineExceeded)
			}
			return nil, fmt.Errorf("no answer to CONNECT within %v", DefaultHandshakeTimeout)
		}
		return nil, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// handshake writes the CONNECT line and reads the reply one byte at a
// time, so nothing after the newline (the start of the guest's stream) is
// consumed here.
func handshake(rw io.ReadWriter, port uint32) error {
	if _, err := fmt.Fprintf(rw, "CONNECT %d\n", port); err != nil {
		return err
	}
	line, err := readLine(rw)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "OK ") {
		return fmt.Errorf("handshake refused: got %q, want \"OK <port>\"", line)
	}
	return nil
}

func readLine(r io.Reader) (string, error) {
	var buf [maxHandshakeLine]byte
	var one [1]byte
	n := 0
	for {
		if _, err := io.ReadFull(r, one[:]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return "", errClosedBeforeOK
			}
			return "", err
		}
		if one[0] == '\n' {
			return string(buf[:n]), nil
		}
		if n == len(buf) {
			return "", fmt.Errorf("handshake reply longer than %d bytes, beginning %q", maxHandshakeLine, buf[:16])
		}
		buf[n] = one[0]
		n++
	}
}
