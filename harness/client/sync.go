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

	"github.com/wren-vm/wren/lib/wire"
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
	hdr    [wire.HeaderLen]byte
	wbuf   []byte      // request frames, reused up to maxKeptFrame
	rbuf   replyBuffer // Call's reply bodies
	sbuf   replyBuffer // ReadStream's reply bodies, which its results alias
	broken error       // set when a call left the stream out of step

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
	c := &Sync{
		conn: conn,
		br:   bufio.NewReaderSize(conn, 4<<10),
		next: 1,
		rbuf: replyBuffer{keep: maxKeptFrame},
		// sbuf's bounds are set by each ReadStream.
	}
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
	if err := c.ready(ctx); err != nil {
		return err
	}
	size := proto.Size(req)
	b := c.requestPrefix(ctx, service, method, size)
	b, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, req)
	if err != nil {
		return fmt.Errorf("marshal request: %w", err)
	}
	payload, err := c.roundTrip(ctx, b, &c.rbuf)
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(payload, resp); err != nil {
		return fmt.Errorf("decode reply: %w", err)
	}
	return nil
}

// ready refuses a call on a connection an earlier call broke, or under a
// context that has already ended (before anything is sent, so the
// connection stays usable).
func (c *Sync) ready(ctx context.Context) error {
	if c.broken != nil {
		return c.broken
	}
	return ctx.Err()
}

// requestPrefix starts a request frame in the Sync's write buffer: room
// for the frame header, then the Request envelope up to a payload of
// payloadLen bytes, which the caller appends before roundTrip. The
// context's deadline becomes the request's timeout.
func (c *Sync) requestPrefix(ctx context.Context, service, method string, payloadLen int) []byte {
	var timeout int64
	if deadline, ok := ctx.Deadline(); ok {
		timeout = max(int64(time.Until(deadline)), 1)
	}
	b := append(c.wbuf[:0], make([]byte, wire.HeaderLen)...)
	return wire.RequestPrefix(b, service, method, timeout, nil, payloadLen)
}

// maxKeptFrame bounds the write buffer and Call's reply buffer that a
// Sync keeps between calls: larger frames (CopyFile's requests, a big
// reply) get a buffer of their own, so a rare large call does not pin its
// size. ReadStream's buffer has its own bound (maxStreamBuffer).
const maxKeptFrame = 64 << 10

// roundTrip sends the request frame b (from requestPrefix plus payload)
// and reads frames until the reply to it, whose body it reads into rbuf.
// It returns the reply's payload, aliasing rbuf, or the reply's status as
// an error.
//
// The context's deadline, or its cancellation, interrupts the write and
// the read; the connection is then closed and the Sync marked broken,
// since the reply could still arrive out of step. A reply that is not a
// Response envelope breaks it too; an undecodable status does not (the
// frame was read whole).
func (c *Sync) roundTrip(ctx context.Context, b []byte, rbuf *replyBuffer) (payload []byte, err error) {
	if len(b)-wire.HeaderLen > wire.MaxData {
		return nil, status.Errorf(codes.ResourceExhausted, "request of %d bytes exceeds maximum message size of %d", len(b)-wire.HeaderLen, wire.MaxData)
	}
	id := c.next
	c.next += 2
	wire.Header{Length: uint32(len(b) - wire.HeaderLen), StreamID: id, Type: wire.TypeRequest}.Put(b)
	if cap(b) <= maxKeptFrame {
		c.wbuf = b
	}

	// Interrupt the blocking write and read when ctx ends.
	deadline, hasDeadline := ctx.Deadline()
	if hasDeadline {
		// A failure shows in the write or the read that follows.
		_ = c.conn.SetDeadline(deadline)
		defer func() { _ = c.conn.SetDeadline(time.Time{}) }()
	}
	if ctx.Done() != nil {
		// Cancellation before the deadline (or without one) moves the
		// deadline into the past.
		fired := make(chan struct{})
		stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Unix(1, 0)); close(fired) })
		defer func() {
			if !stop() {
				// It ran (or is running) even though the call may have
				// finished first: undo it once it is done.
				<-fired
				_ = c.conn.SetDeadline(time.Time{})
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
		return nil, fail(err)
	}
	for {
		if _, err := io.ReadFull(c.br, c.hdr[:]); err != nil {
			return nil, fail(err)
		}
		h := wire.ParseHeader(c.hdr[:])
		if h.Length > wire.MaxData {
			return nil, fail(fmt.Errorf("reply of %d bytes exceeds maximum message size of %d", h.Length, wire.MaxData))
		}
		body := rbuf.get(int(h.Length))
		if _, err := io.ReadFull(c.br, body); err != nil {
			return nil, fail(err)
		}
		if h.StreamID != id || h.Type != wire.TypeResponse {
			continue // not ours: nothing else is outstanding, so ignore it
		}
		st, payload, err := wire.ParseResponse(body)
		if err != nil {
			return nil, fail(err)
		}
		if err := statusError(st); err != nil {
			return nil, err
		}
		return payload, nil
	}
}

// replyBuffer is where a Sync reads reply bodies, kept between calls.
type replyBuffer struct {
	buf []byte
	// keep bounds the buffer kept for the next call: a larger reply
	// gets a buffer of its own.
	keep int
	// grow is the capacity to allocate when buf is too small (at least
	// the reply's size), so that a stream of growing replies allocates
	// once.
	grow int
}

// get returns n bytes of the buffer, reallocating it if it is too small.
func (r *replyBuffer) get(n int) []byte {
	if n <= cap(r.buf) {
		return r.buf[:n]
	}
	b := make([]byte, n, max(n, min(r.grow, r.keep)))
	if cap(b) <= r.keep {
		r.buf = b
	}
	return b
}

// statusError returns the error an encoded google.rpc.Status carries, or
// nil for OK (which servers send as an empty status).
func statusError(st []byte) error {
	if len(st) == 0 {
		return nil
	}
	var sp spb.Status
	if err := proto.Unmarshal(st, &sp); err != nil {
		return fmt.Errorf("decode reply status: %w", err)
	}
	if sp.Code != int32(codes.OK) {
		return status.ErrorProto(&sp)
	}
	return nil
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
