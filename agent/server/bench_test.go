package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/wren-vm/wren/agent/server/wire"
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
	s, err := New(slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	s.TTRPC().Register(service, map[string]ttrpc.Method{
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
	conn := serveForBench(b, s)
	body := wire.AppendRequest(nil, service, "Check", nil, 0, nil)
	frame := make([]byte, wire.HeaderLen, wire.HeaderLen+len(body))
	frame = append(frame, body...)
	replyBuf := make([]byte, len(reply)+64)
	call := func(id uint32) {
		wire.Header{Length: uint32(len(body)), StreamID: id, Type: wire.TypeRequest}.Put(frame)
		if _, err := conn.Write(frame); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(conn, replyBuf[:wire.HeaderLen]); err != nil {
			b.Fatal(err)
		}
		h := wire.ParseHeader(replyBuf)
		if _, err := io.ReadFull(conn, replyBuf[:h.Length]); err != nil {
			b.Fatal(err)
		}
		st, _, err := wire.ParseResponse(replyBuf[:h.Length])
		if err != nil || len(st) > 0 {
			b.Fatalf("reply status %x, %v", st, err)
		}
	}
	id := uint32(1)
	for i := 0; i < 100; i++ {
		call(id)
		id += 2
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		call(id)
		id += 2
	}
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
	go func() { s.Serve(ctx, ln); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	conn, err := net.Dial("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}
