package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/wren-vm/wren/agent/server/wire"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// Sync is a ttrpc client that makes one call at a time, entirely on the
// caller's goroutine: it writes the request frame and reads the reply
// itself. The stock client (Client) hands every reply from its reader
// goroutine to the caller, a scheduler hop per call; Sync has none, which
// is what a one-shot tool (wrenctl call) or a latency benchmark wants.
// Concurrent calls on one Sync wait for each other; use Client (or
// several Syncs) for calls that block, such as WaitProcess.
type Sync struct {
	mu     sync.Mutex
	conn   net.Conn
	br     *bufio.Reader
	next   uint32 // the next stream id: odd, increasing
	wbuf   []byte
	rbuf   []byte
	broken error // set when a call left the stream out of step

	// Health calls grpc.Health through this client.
	Health agentpb.HealthService
}

// DialSync connects to the agent at addr (the forms Dial takes) with a
// synchronous client.
func DialSync(ctx context.Context, addr string) (*Sync, error) {
	conn, err := DialConn(ctx, addr)
	if err != nil {
		return nil, err
	}
	return NewSync(conn), nil
}

// NewSync wraps an established connection.
func NewSync(conn net.Conn) *Sync {
	c := &Sync{conn: conn, br: bufio.NewReaderSize(conn, 4<<10), next: 1}
	c.Health = syncHealth{c}
	return c
}

// Close closes the connection.
func (c *Sync) Close() error { return c.conn.Close() }

var errSyncBroken = errors.New("connection unusable after an interrupted call")

// Call invokes service/method with req and decodes the reply into resp.
// The context's deadline travels to the server as the call's timeout and
// bounds the wait here; a call interrupted by its context closes the
// connection, since its reply would arrive out of step.
func (c *Sync) Call(ctx context.Context, service, method string, req, resp proto.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.call(ctx, service, method, req, resp); err != nil {
		return fmt.Errorf("%s/%s: %w", service, method, err)
	}
	return nil
}

func (c *Sync) call(ctx context.Context, service, method string, req, resp proto.Message) error {
	if c.broken != nil {
		return c.broken
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var timeout int64
	deadline, hasDeadline := ctx.Deadline()
	if hasDeadline {
		timeout = max(int64(time.Until(deadline)), 1)
	}
	size := proto.Size(req)
	b := wire.RequestPrefix(append(c.wbuf[:0], make([]byte, wire.HeaderLen)...), service, method, timeout, nil, size)
	b, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, req)
	if err != nil {
		return fmt.Errorf("marshal request: %w", err)
	}
	if len(b)-wire.HeaderLen > wire.MaxData {
		return status.Errorf(codes.ResourceExhausted, "request of %d bytes exceeds maximum message size of %d", len(b)-wire.HeaderLen, wire.MaxData)
	}
	id := c.next
	c.next += 2
	wire.Header{Length: uint32(len(b) - wire.HeaderLen), StreamID: id, Type: wire.TypeRequest}.Put(b)
	if cap(b) <= 64<<10 {
		c.wbuf = b
	}

	// Interrupt the blocking write and read when ctx ends.
	if hasDeadline {
		c.conn.SetDeadline(deadline)
		defer c.conn.SetDeadline(time.Time{})
	}
	if ctx.Done() != nil {
		// Cancellation before the deadline (or without one) moves the
		// deadline into the past.
		fired := make(chan struct{})
		stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)); close(fired) })
		defer func() {
			if !stop() {
				// It ran (or is running) even though the call may have
				// finished first: undo it once it is done.
				<-fired
				c.conn.SetDeadline(time.Time{})
			}
		}()
	}
	fail := func(err error) error {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		} else if hasDeadline && errors.Is(err, os.ErrDeadlineExceeded) {
			err = context.DeadlineExceeded
		}
		c.broken = fmt.Errorf("%w: %w", errSyncBroken, err)
		c.conn.Close()
		return err
	}
	if _, err := c.conn.Write(b); err != nil {
		return fail(err)
	}
	for {
		var hdr [wire.HeaderLen]byte
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			return fail(err)
		}
		h := wire.ParseHeader(hdr[:])
		if h.Length > wire.MaxData {
			return fail(fmt.Errorf("reply of %d bytes exceeds maximum message size of %d", h.Length, wire.MaxData))
		}
		body := c.rbuf
		if int(h.Length) > cap(body) {
			body = make([]byte, h.Length)
			if h.Length <= 64<<10 {
				c.rbuf = body
			}
		}
		body = body[:h.Length]
		if _, err := io.ReadFull(c.br, body); err != nil {
			return fail(err)
		}
		if h.StreamID != id || h.Type != wire.TypeResponse {
			continue // not ours: nothing else is outstanding, so ignore it
		}
		st, payload, err := wire.ParseResponse(body)
		if err != nil {
			return fail(err)
		}
		if len(st) > 0 {
			var sp spb.Status
			if err := proto.Unmarshal(st, &sp); err != nil {
				return fmt.Errorf("decode reply status: %w", err)
			}
			if sp.Code != int32(codes.OK) {
				return status.ErrorProto(&sp)
			}
		}
		if err := proto.Unmarshal(payload, resp); err != nil {
			return fmt.Errorf("decode reply: %w", err)
		}
		return nil
	}
}

// syncHealth is grpc.Health over a Sync client.
type syncHealth struct{ c *Sync }

func (h syncHealth) Check(ctx context.Context, req *agentpb.CheckRequest) (*agentpb.HealthCheckResponse, error) {
	var resp agentpb.HealthCheckResponse
	if err := h.c.Call(ctx, "grpc.Health", "Check", req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

func (h syncHealth) Version(ctx context.Context, req *agentpb.CheckRequest) (*agentpb.VersionCheckResponse, error) {
	var resp agentpb.VersionCheckResponse
	if err := h.c.Call(ctx, "grpc.Health", "Version", req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}
