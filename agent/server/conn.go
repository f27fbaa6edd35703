package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/wren-vm/wren/agent/replyhook"
	"github.com/wren-vm/wren/agent/replysplice"
	"github.com/wren-vm/wren/lib/wire"
)

const (
	// readBufSize buffers each connection's reads: a typical request
	// (header and envelope) arrives in one read.
	readBufSize = 4 << 10
	// maxKeptBuf bounds the frame buffers a connection keeps between
	// calls and the small-frame pool holds.
	maxKeptBuf = 64 << 10
	// maxPooledBuf bounds the large reply frames (ReadStdout's, up to the
	// 4 MiB message limit) kept in a pool of their own: a stream of big
	// reads then reuses its frames instead of allocating one per call,
	// which cost a GC cycle per MiB or so. sync.Pool drops what is unused
	// over two GC cycles, so a past burst does not pin them for long.
	maxPooledBuf = wire.HeaderLen + wire.MaxData + 64
)

var (
	// frames pools response frame buffers of up to maxKeptBuf bytes.
	frames = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}
	// bigFrames pools larger ones, up to maxPooledBuf.
	bigFrames sync.Pool
)

// conn serves one client connection.
type conn struct {
	s       *Server
	nc      net.Conn
	methods methodTable
	// ctx is every call's parent; it ends with the connection.
	ctx    context.Context
	cancel context.CancelFunc
	// wmu keeps each reply frame whole on the wire.
	wmu sync.Mutex
	// raw is the socket beneath nc when replies can be spliced into it
	// (replysplice); nil otherwise, and spliced replies are copied.
	raw syscall.RawConn

	// inlinePayload is the request body of the inline call running on
	// the reader goroutine; inlineUnmarshal decodes it, allocated once.
	inlinePayload   []byte
	inlineUnmarshal func(any) error
}

func newConn(s *Server, nc net.Conn, methods methodTable) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &conn{s: s, nc: nc, methods: methods, ctx: ctx, cancel: cancel}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw = raw
			raiseSendBuffer(raw)
		}
	}
	c.inlineUnmarshal = func(obj any) error { return unmarshalPayload(c.inlinePayload, obj) }
	return c
}

// serve reads frames until the peer goes away or sends something that
// cannot be framed; then it closes the connection and cancels its calls.
func (c *conn) serve() {
	defer c.cancel()
	defer c.nc.Close()
	br := bufio.NewReaderSize(c.nc, readBufSize)
	var (
		hdr  [wire.HeaderLen]byte
		req  wire.Request
		last uint32 // the highest stream id seen; ids must increase
		body []byte // reused for frames up to maxKeptBuf
	)
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			c.readEnded(err)
			return
		}
		h := wire.ParseHeader(hdr[:])
		if h.Length > wire.MaxData {
			if _, err := br.Discard(int(h.Length)); err != nil {
				c.readEnded(err)
				return
			}
			c.sendStatus(h.StreamID, status.Newf(codes.ResourceExhausted,
				"message length %d exceeds maximum message size of %d", h.Length, wire.MaxData))
			continue
		}
		n := int(h.Length)
		buf := body
		if n > cap(buf) {
			buf = make([]byte, n)
			if n <= maxKeptBuf {
				body = buf
			}
		}
		buf = buf[:n]
		if _, err := io.ReadFull(br, buf); err != nil {
			c.readEnded(err)
			return
		}
		if h.StreamID%2 != 1 {
			c.sendStatus(h.StreamID, status.New(codes.InvalidArgument, "StreamID must be odd for client initiated streams"))
			continue
		}
		switch h.Type {
		case wire.TypeRequest:
			if h.StreamID <= last {
				c.sendStatus(h.StreamID, status.New(codes.InvalidArgument, "StreamID cannot be re-used and must increment"))
				continue
			}
			last = h.StreamID
			c.request(h.StreamID, buf, &req)
		case wire.TypeData:
			// No agent method streams, so no stream is ever open for data.
			c.sendStatus(h.StreamID, status.New(codes.InvalidArgument, "StreamID is no longer active"))
		default:
			// Unknown types are ignored, for compatibility with later
			// protocol versions.
		}
	}
}

// readEnded logs why a connection's reads ended, unless it is the peer
// (or shutdown) closing it.
func (c *conn) readEnded(err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) {
		return
	}
	c.s.log.Warn("ttrpc connection read failed; closing it", "err", err)
}

// request dispatches one Request frame: inline methods run here, others on
// a goroutine of their own.
func (c *conn) request(id uint32, frame []byte, req *wire.Request) {
	if err := wire.ParseRequest(frame, req); err != nil {
		c.sendStatus(id, status.Newf(codes.InvalidArgument, "unmarshal request error: %v", err))
		return
	}
	m, serviceKnown, ok := c.methods.lookup(req.Service, req.Method)
	if !serviceKnown {
		c.sendStatus(id, status.Newf(codes.Unimplemented, "service %s", req.Service))
		return
	}
	if !ok {
		c.sendStatus(id, status.Newf(codes.Unimplemented, "method %s", req.Method))
		return
	}
	ctx := c.ctx
	if len(req.Metadata) > 0 {
		md := ttrpc.MD{}
		if err := req.ForEachMetadata(func(k, v string) { md[k] = append(md[k], v) }); err != nil {
			c.sendStatus(id, status.Newf(codes.InvalidArgument, "unmarshal request error: %v", err))
			return
		}
		ctx = ttrpc.WithMetadata(ctx, md)
	}
	timeout := time.Duration(req.TimeoutNano)
	c.s.callStarted()
	if m.inline {
		cancel := context.CancelFunc(nil)
		if timeout != 0 {
			ctx, cancel = context.WithTimeout(ctx, timeout)
		}
		c.inlinePayload = req.Payload
		resp, err := c.s.invoke(ctx, m, c.inlineUnmarshal)
		c.inlinePayload = nil
		if cancel != nil {
			cancel()
		}
		c.reply(id, resp, err)
		c.s.callDone()
		return
	}
	c.spawn(ctx, id, m, timeout, bytes.Clone(req.Payload)) // the reader reuses frame
}

// spawn runs a call on a goroutine of its own, which writes the reply.
// (A function of its own so that the inline path's ctx does not escape.)
func (c *conn) spawn(ctx context.Context, id uint32, m *method, timeout time.Duration, payload []byte) {
	go func() {
		defer c.s.callDone()
		var cancel context.CancelFunc
		if timeout != 0 {
			ctx, cancel = context.WithTimeout(ctx, timeout)
		} else {
			// Cancelled when the handler returns, as the stock server
			// does, so nothing a handler started on ctx outlives it.
			ctx, cancel = context.WithCancel(ctx)
		}
		// Handlers may hand out pooled buffers (ReadStdout's data) that
		// are free again only once the reply is on the wire.
		ctx, replied := replyhook.With(ctx)
		resp, err := c.s.invoke(ctx, m, func(obj any) error { return unmarshalPayload(payload, obj) })
		cancel()
		c.reply(id, resp, err)
		replied()
	}()
}

// unmarshalPayload decodes a request payload as the stock server does.
func unmarshalPayload(p []byte, obj any) error {
	m, ok := obj.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "ttrpc: error unsupported request type: %T", obj)
	}
	if err := proto.Unmarshal(p, m); err != nil {
		return status.Errorf(codes.Internal, "ttrpc: error unmarshalling payload: %v", err)
	}
	return nil
}

// reply sends a handler's result: the marshalled response, a reply whose
// data follows from a pipe (replysplice), or the error as a status.
func (c *conn) reply(id uint32, resp any, err error) {
	if r, ok := resp.(*replysplice.Reply); ok && r != nil {
		if err == nil {
			err = c.sendSpliced(id, r)
		}
		// Released once its bytes are on the wire, or (before an error
		// goes out) not to be sent.
		r.Close()
	} else if err == nil {
		m, ok := resp.(proto.Message)
		switch {
		case resp == nil || ok && !m.ProtoReflect().IsValid():
			err = errors.New("ttrpc: marshal called with nil")
		case !ok:
			err = status.Errorf(codes.Internal, "ttrpc: error unsupported response type: %T", resp)
		default:
			err = c.sendMessage(id, m)
		}
	}
	if err == nil {
		return
	}
	st, ok := status.FromError(err)
	if !ok {
		st = status.New(codeOf(err), err.Error())
	}
	c.sendStatus(id, st)
}

// sendMessage marshals m straight into its response frame: one copy of
// the payload and one write.
func (c *conn) sendMessage(id uint32, m proto.Message) error {
	bp, err := marshalReply(id, m, 0)
	if err != nil {
		return err
	}
	defer putFrameBuf(bp)
	c.write(*bp)
	return nil
}

// marshalReply marshals m into a pooled response frame whose payload is m
// followed by tailLen bytes that the caller appends or sends after the
// frame; the header and the envelope count them.
func marshalReply(id uint32, m proto.Message, tailLen int) (*[]byte, error) {
	size := proto.Size(m)
	tooBig := status.Errorf(codes.ResourceExhausted, "response of %d bytes exceeds maximum message size of %d", size+tailLen, wire.MaxData)
	if size+tailLen > wire.MaxData {
		return nil, tooBig // before allocating a frame for it
	}
	bp := frameBuf(wire.HeaderLen + 16 + size)
	b := wire.ResponsePrefix((*bp)[:wire.HeaderLen], nil, size+tailLen)
	if len(b)-wire.HeaderLen+size+tailLen > wire.MaxData {
		putFrameBuf(bp)
		return nil, tooBig
	}
	start := len(b)
	b, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, m)
	if err != nil {
		putFrameBuf(bp)
		return nil, status.Errorf(codes.Internal, "ttrpc: error marshaling payload: %v", err)
	}
	if len(b)-start != size {
		// The handler changed the message while it was being sent.
		putFrameBuf(bp)
		return nil, status.Errorf(codes.Internal, "ttrpc: response changed size while marshalling (%d, then %d bytes)", size, len(b)-start)
	}
	wire.Header{Length: uint32(len(b) - wire.HeaderLen + tailLen), StreamID: id, Type: wire.TypeResponse}.Put(b)
	*bp = b
	return bp, nil
}

// sendStatus sends a Response carrying st and no payload.
func (c *conn) sendStatus(id uint32, st *status.Status) {
	sp, err := proto.Marshal(st.Proto())
	if err != nil {
		c.s.log.Error("marshal ttrpc status", "err", err)
		sp = nil
	}
	b := wire.ResponsePrefix(make([]byte, wire.HeaderLen, wire.HeaderLen+8+len(sp)), sp, 0)
	wire.Header{Length: uint32(len(b) - wire.HeaderLen), StreamID: id, Type: wire.TypeResponse}.Put(b)
	c.write(b)
}

// write sends one whole frame; a failed write closes the connection, which
// ends its reader.
func (c *conn) write(b []byte) {
	c.wmu.Lock()
	_, err := c.nc.Write(b)
	c.wmu.Unlock()
	if err != nil {
		c.writeFailed(err)
	}
}

// writeFailed closes the connection after a write error: a frame may be
// cut short, so nothing after it could be parsed.
func (c *conn) writeFailed(err error) {
	if !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		c.s.log.Warn("ttrpc reply write failed; closing the connection", "err", err)
	}
	c.nc.Close()
}

func frameBuf(n int) *[]byte {
	if n > maxKeptBuf {
		if bp, ok := bigFrames.Get().(*[]byte); ok && cap(*bp) >= n {
			return bp
		}
		b := make([]byte, 0, n)
		return &b
	}
	bp := frames.Get().(*[]byte)
	if cap(*bp) < n {
		*bp = make([]byte, 0, max(n, 1024))
	}
	return bp
}

func putFrameBuf(bp *[]byte) {
	*bp = (*bp)[:0]
	switch c := cap(*bp); {
	case c <= maxKeptBuf:
		frames.Put(bp)
	case c <= maxPooledBuf:
		bigFrames.Put(bp)
	}
}

// codeOf maps plain Go errors to status codes the way ttrpc (and gRPC)
// do for handlers that return no status.
func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case err == io.EOF:
		return codes.OutOfRange
	case err == io.ErrClosedPipe, err == io.ErrNoProgress, err == io.ErrShortBuffer, err == io.ErrShortWrite, err == io.ErrUnexpectedEOF:
		return codes.FailedPrecondition
	case err == os.ErrInvalid:
		return codes.InvalidArgument
	case os.IsExist(err):
		return codes.AlreadyExists
	case os.IsNotExist(err):
		return codes.NotFound
	case os.IsPermission(err):
		return codes.PermissionDenied
	}
	return codes.Unknown
}
