package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/wren-vm/wren/lib/wire"
)

// BenchmarkUnaryRoundTrip measures a Check-like call (inline) and the same
// call on a goroutine of its own, against both servers, with a minimal
// client that reuses its buffers: the allocations reported are the
// server's (plus the handler's reply).
func BenchmarkUnaryRoundTrip(b *testing.B) {
	for _, mode := range []string{"", "spawn", "stock"} {
		for _, svc := range []string{"grpc.Health", "test.Svc"} {
			name := map[string]string{"": "wren", "spawn": "wren-spawn", "stock": "stock"}[mode] + "/" + svc
			b.Run(name, func(b *testing.B) {
				b.Setenv(ImplementationEnv, mode)
				benchRoundTrip(b, svc, nil)
			})
		}
	}
}

// BenchmarkLargeReply measures a 1 MiB reply (a ReadStdout with a 1 MiB
// Len): the server copies the payload once, into the frame it writes.
func BenchmarkLargeReply(b *testing.B) {
	data := make([]byte, 1<<20)
	for _, mode := range []string{"", "stock"} {
		b.Run(map[string]string{"": "wren", "stock": "stock"}[mode], func(b *testing.B) {
			b.Setenv(ImplementationEnv, mode)
			b.SetBytes(int64(len(data)))
			benchRoundTrip(b, "test.Svc", data)
		})
	}
}

// benchRoundTrip calls service/Check, which replies with an Int32, or
// with reply as a BytesValue when it is not nil.
func benchRoundTrip(b *testing.B, service string, reply []byte) {
	s, err := New(Options{Log: slog.New(slog.DiscardHandler), Implementation: os.Getenv(ImplementationEnv)})
	if err != nil {
		b.Fatal(err)
	}
	s.Register(service, map[string]ttrpc.Method{
		"Check": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			var req emptypb.Empty
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			if reply != nil {
				return &wrapperspb.BytesValue{Value: reply}, nil
			}
			return wrapperspb.Int32(1), nil
		},
	})
	c := newBenchClient(b, serveForBench(b, s), service, "Check", len(reply)+64)
	call := func() {
		st, _, err := wire.ParseResponse(c.call())
		if err != nil || len(st) > 0 {
			b.Fatalf("reply status %x, %v", st, err)
		}
	}
	for i := 0; i < 100; i++ {
		call()
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		call()
	}
}

// benchClient sends one fixed request per call and reads each reply into
// the same buffer, so that what a benchmark measures is the server.
type benchClient struct {
	b     *testing.B
	conn  net.Conn
	body  []byte // the request, without its header
	frame []byte
	reply []byte
	next  uint32 // the next stream id
}

func newBenchClient(b *testing.B, conn net.Conn, service, method string, maxReply int) *benchClient {
	body := wire.AppendRequest(nil, service, method, nil, 0, nil)
	frame := append(make([]byte, wire.HeaderLen, wire.HeaderLen+len(body)), body...)
	return &benchClient{b: b, conn: conn, body: body, frame: frame, reply: make([]byte, maxReply), next: 1}
}

// call makes one call and returns the reply frame's body.
func (c *benchClient) call() []byte {
	wire.Header{Length: uint32(len(c.body)), StreamID: c.next, Type: wire.TypeRequest}.Put(c.frame)
	c.next += 2
	if _, err := c.conn.Write(c.frame); err != nil {
		c.b.Fatal(err)
	}
	if _, err := io.ReadFull(c.conn, c.reply[:wire.HeaderLen]); err != nil {
		c.b.Fatal(err)
	}
	h := wire.ParseHeader(c.reply)
	if _, err := io.ReadFull(c.conn, c.reply[:h.Length]); err != nil {
		c.b.Fatal(err)
	}
	return c.reply[:h.Length]
}

// serveForBench serves s on a unix socket until the benchmark ends and
// returns a connection to it.
func serveForBench(b *testing.B, s *Server) net.Conn {
	sock := filepath.Join(b.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Serve(ctx, ln); close(done) }() // ends when the benchmark cancels it
	b.Cleanup(func() { cancel(); <-done })
	conn, err := net.Dial("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}
