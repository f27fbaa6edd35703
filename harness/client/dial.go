package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/mdlayher/vsock"

	"github.com/wren-vm/wren/agent/address"
)

// DialConn opens a byte stream to the agent at addr, ready for ttrpc.
func DialConn(ctx context.Context, addr string) (net.Conn, error) {
	a, err := address.Parse(addr)
	if err != nil {
		return nil, err
	}
	switch a.Scheme {
	case address.Vsock:
		if a.CID < 0 {
			return nil, fmt.Errorf("dial %s: a context id is required to dial (not -1)", addr)
		}
		conn, err := dialVsock(ctx, uint32(a.CID), a.Port)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, withoutOp(err))
		}
		return conn, nil
	case address.HybridVsock:
		return DialHybridVsock(ctx, a.Path, a.Port)
	case address.Unix:
		var d net.Dialer
		conn, err := d.DialContext(ctx, "unix", a.UnixName())
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, withoutOp(err))
		}
		return conn, nil
	}
	return nil, fmt.Errorf("dial %s: unsupported scheme %s", addr, a.Scheme)
}

// withoutOp drops a *net.OpError's "dial unix PATH" prefix: the callers
// name the address themselves, and it read twice in one line. The cause
// (an *os.SyscallError) stays in the chain for errors.Is.
func withoutOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// NotListening reports whether a dial failed because nothing listens at
// the address: no socket file, a refused connection, or (hybrid vsock) a
// guest port that never answered while the context lasted.
func NotListening(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, errClosedBeforeOK) ||
		errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.EHOSTUNREACH)
}

// dialVsock connects with AF_VSOCK; the connect itself cannot be cancelled,
// so a context that ends first abandons it and closes it when it completes.
func dialVsock(ctx context.Context, cid, port uint32) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, err := vsock.Dial(cid, port, nil)
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		return r.conn, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// retryable reports whether a failed attempt may succeed later: nobody
// listening yet, or the peer closing because the guest port is not up yet.
func retryable(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, errClosedBeforeOK)
}

// backoff doubles the wait between attempts, from 10 ms up to
// maxBackoff: an attempt against a guest that is not listening yet costs
// a refused CONNECT, and a longer wait only delays the first answer after
// a boot (the time from the agent's listen to its first answer is what a
// boot measurement adds on top of the guest's own; docs/perf/boot.md).
type backoff struct{ next time.Duration }

const maxBackoff = 20 * time.Millisecond

func (b *backoff) wait(ctx context.Context) error {
	if b.next == 0 {
		b.next = 10 * time.Millisecond
	}
	t := time.NewTimer(b.next)
	defer t.Stop()
	if b.next < maxBackoff {
		b.next = min(2*b.next, maxBackoff)
	}
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
