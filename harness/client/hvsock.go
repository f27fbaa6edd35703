package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
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
	conn, _, err := DialHybridVsockPort(ctx, udsPath, port)
	return conn, err
}

// DialHybridVsockPort is DialHybridVsock that also returns the host port
// the backend answered with ("OK <hostport>"): the port the guest sees the
// connection come from, by which Kata's passfd IO names a stream.
func DialHybridVsockPort(ctx context.Context, udsPath string, port uint32) (net.Conn, uint32, error) {
	var b backoff
	for {
		conn, hostPort, err := hybridVsockAttempt(ctx, udsPath, port)
		if err == nil {
			return conn, hostPort, nil
		}
		if !retryable(err) {
			return nil, 0, fmt.Errorf("hybrid vsock %s port %d: %w", udsPath, port, err)
		}
		if werr := b.wait(ctx); werr != nil {
			return nil, 0, fmt.Errorf("hybrid vsock %s port %d: %w (last attempt: %w)", udsPath, port, werr, err)
		}
	}
}

func hybridVsockAttempt(ctx context.Context, udsPath string, port uint32) (_ net.Conn, hostPort uint32, retErr error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", udsPath)
	if err != nil {
		return nil, 0, withoutOp(err)
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
		return nil, 0, err
	}
	hostPort, err = handshake(conn, port)
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if ok { // the socket deadline is the context's, a hair early
				return nil, 0, fmt.Errorf("no answer to CONNECT: %w", context.DeadlineExceeded)
			}
			return nil, 0, fmt.Errorf("no answer to CONNECT within %v", DefaultHandshakeTimeout)
		}
		return nil, 0, err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		conn.Close()
		return nil, 0, err
	}
	return conn, hostPort, nil
}

// handshake writes the CONNECT line and reads the reply one byte at a
// time, so nothing after the newline (the start of the guest's stream) is
// consumed here.
func handshake(rw io.ReadWriter, port uint32) (hostPort uint32, err error) {
	if _, err := fmt.Fprintf(rw, "CONNECT %d\n", port); err != nil {
		return 0, err
	}
	line, err := readLine(rw)
	if err != nil {
		return 0, err
	}
	rest, ok := strings.CutPrefix(line, "OK ")
	if !ok {
		return 0, fmt.Errorf("handshake refused: got %q, want \"OK <port>\"", line)
	}
	// Some backends send only "OK"-led lines without a usable port; the
	// port is needed only by passfd IO, which says so when it is 0.
	p, _ := strconv.ParseUint(strings.TrimSpace(rest), 10, 32)
	return uint32(p), nil
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
