package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/wren-vm/wren/agent/replysplice"
	"github.com/wren-vm/wren/agent/stdio"
	"github.com/wren-vm/wren/lib/wire"
)

// pipeWith returns the read end of a pipe of the given capacity that holds
// data (and has no writer left).
func pipeWith(t *testing.T, capacity int, data []byte) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(r.Fd(), unix.F_SETPIPE_SZ, capacity); err != nil {
		t.Fatalf("F_SETPIPE_SZ %d: %v", capacity, err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { r.Close() })
	return r
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	return b
}

// hold hands the n bytes that pipe holds over as a Pipe, counting its
// releases.
func hold(t *testing.T, pipe *os.File, n int, released *atomic.Int32) *replysplice.Pipe {
	t.Helper()
	p, err := replysplice.Hold(int(pipe.Fd()), n, func() { released.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A reply whose data waits in a pipe arrives as its field, whole and in
// order, under both servers (the stock one has the bytes read into the
// message), and the pipe is released once. 1 MiB is several socket
// buffers, so the splice has to wait for the client to drain the socket.
func TestSplicedReplyArrivesAsTheField(t *testing.T) {
	bothServers(t, func(t *testing.T) {
		want := pattern(1 << 20)
		pipe := pipeWith(t, 1<<20, want)
		var released atomic.Int32
		c, _, _ := startTestServer(t, map[string]ttrpc.Method{
			"Read": func(ctx context.Context, unmarshal func(any) error) (any, error) {
				return &replysplice.Reply{Message: &wrapperspb.BytesValue{}, Field: "value", Data: hold(t, pipe, len(want), &released)}, nil
			},
		})
		var got wrapperspb.BytesValue
		if err := c.Call(context.Background(), "test.Svc", "Read", &wrapperspb.BytesValue{}, &got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Value, want) {
			t.Fatalf("got %d bytes, want the %d written (equal prefix %d)", len(got.Value), len(want), commonPrefix(got.Value, want))
		}
		// The release follows the reply's last byte onto the wire.
		waitFor(t, func() bool { return released.Load() > 0 })
		if released.Load() != 1 {
			t.Errorf("pipe released %d times, want once", released.Load())
		}
	})
}

// A spliced reply's message keeps its other fields: they are marshalled
// before the field from the pipe.
func TestSplicedReplyKeepsTheOtherFields(t *testing.T) {
	bothServers(t, func(t *testing.T) {
		want := pattern(64 << 10)
		pipe := pipeWith(t, 64<<10, want)
		var released atomic.Int32
		c, _, _ := startTestServer(t, map[string]ttrpc.Method{
			"Read": func(ctx context.Context, unmarshal func(any) error) (any, error) {
				// Any.type_url (1) from the message, Any.value (2) from the pipe.
				return &replysplice.Reply{Message: &anypb.Any{TypeUrl: "wren/pattern"}, Field: "value", Data: hold(t, pipe, len(want), &released)}, nil
			},
		})
		var got anypb.Any
		if err := c.Call(context.Background(), "test.Svc", "Read", &wrapperspb.BytesValue{}, &got); err != nil {
			t.Fatal(err)
		}
		if got.TypeUrl != "wren/pattern" || !bytes.Equal(got.Value, want) {
			t.Fatalf("got type_url %q and %d bytes, want %q and the %d held", got.TypeUrl, len(got.Value), "wren/pattern", len(want))
		}
	})
}

// With no socket beneath the connection, the bytes are copied after the
// frame instead of spliced.
func TestSplicedReplyWithoutSocketIsCopied(t *testing.T) {
	want := pattern(256 << 10)
	pipe := pipeWith(t, 256<<10, want)
	var released atomic.Int32
	s, err := New(Options{Log: slog.New(slog.DiscardHandler), Implementation: os.Getenv(ImplementationEnv)})
	if err != nil {
		t.Fatal(err)
	}
	s.Register("test.Svc", map[string]ttrpc.Method{
		"Read": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			return &replysplice.Reply{Message: &wrapperspb.BytesValue{}, Field: "value", Data: hold(t, pipe, len(want), &released)}, nil
		},
	})
	methods, err := buildMethods(s.registered(), nil)
	if err != nil {
		t.Fatal(err)
	}
	serverEnd, clientEnd := net.Pipe()
	c := newConn(s, serverEnd, methods)
	if c.raw != nil {
		t.Fatal("a net.Pipe connection offered a socket to splice into")
	}
	done := make(chan struct{})
	go func() { defer close(done); c.serve() }()
	client := ttrpc.NewClient(clientEnd)
	var got wrapperspb.BytesValue
	err = client.Call(context.Background(), "test.Svc", "Read", &wrapperspb.BytesValue{}, &got)
	client.Close()
	<-done
	if err != nil || !bytes.Equal(got.Value, want) {
		t.Fatalf("got %d bytes (%v), want the %d written", len(got.Value), err, len(want))
	}
	waitFor(t, func() bool { return released.Load() > 0 })
	if released.Load() != 1 {
		t.Errorf("pipe released %d times, want once", released.Load())
	}
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// A handler that fails with a spliced reply in hand, or returns one the
// server cannot send (its field is not an unset bytes field), gets an
// error to the client; the held bytes stay in the pipe, the release runs
// and the duplicate descriptor is closed.
func TestUnsentReplyLeavesHeldBytesInPipe(t *testing.T) {
	bothServers(t, func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			reply func(*replysplice.Pipe) (any, error)
			code  codes.Code
		}{
			{"handler error", func(p *replysplice.Pipe) (any, error) {
				return &replysplice.Reply{Message: &wrapperspb.BytesValue{}, Field: "value", Data: p},
					status.Error(codes.FailedPrecondition, "changed my mind")
			}, codes.FailedPrecondition},
			{"field set", func(p *replysplice.Pipe) (any, error) {
				return &replysplice.Reply{Message: &wrapperspb.BytesValue{Value: []byte("x")}, Field: "value", Data: p}, nil
			}, codes.Internal},
			{"not bytes", func(p *replysplice.Pipe) (any, error) {
				return &replysplice.Reply{Message: &wrapperspb.StringValue{}, Field: "value", Data: p}, nil
			}, codes.Internal},
		} {
			t.Run(tc.name, func(t *testing.T) {
				want := pattern(64 << 10)
				pipe := pipeWith(t, 64<<10, want)
				var released atomic.Int32
				c, _, _ := startTestServer(t, map[string]ttrpc.Method{
					"Read": func(ctx context.Context, unmarshal func(any) error) (any, error) {
						return tc.reply(hold(t, pipe, len(want), &released))
					},
					"Ping": func(ctx context.Context, unmarshal func(any) error) (any, error) {
						return &wrapperspb.BytesValue{}, nil
					},
				})
				// The server holds its end of the connection once a call went through.
				if err := c.Call(context.Background(), "test.Svc", "Ping", &wrapperspb.BytesValue{}, &wrapperspb.BytesValue{}); err != nil {
					t.Fatal(err)
				}
				fds := countFDs(t)
				err := c.Call(context.Background(), "test.Svc", "Read", &wrapperspb.BytesValue{}, &wrapperspb.BytesValue{})
				if status.Code(err) != tc.code {
					t.Fatalf("got %v, want %v", err, tc.code)
				}
				if released.Load() != 1 {
					t.Errorf("release ran %d times, want 1", released.Load())
				}
				if n := countFDs(t); n != fds {
					t.Errorf("%d fds after the call, %d before", n, fds)
				}
				got := make([]byte, 2*len(want))
				n, _ := pipe.Read(got)
				if !bytes.Equal(got[:n], want) {
					t.Errorf("pipe holds %d bytes after the failed call, want the %d held", n, len(want))
				}
			})
		}
	})
}

// A client that goes away while the server splices a reply it does not
// read ends the splice: the release runs and neither the duplicate
// descriptor nor the call's goroutine stays behind.
func TestSpliceEndsWhenClientLeaves(t *testing.T) {
	want := pattern(1 << 20)
	pipe := pipeWith(t, 1<<20, want)
	released := make(chan struct{})
	replied := make(chan struct{})
	c, sock, _, _ := startServer(t, map[string]map[string]ttrpc.Method{"test.Svc": {
		"Read": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			p, err := replysplice.Hold(int(pipe.Fd()), len(want), func() { close(released) })
			if err != nil {
				return nil, err
			}
			close(replied)
			return &replysplice.Reply{Message: &wrapperspb.BytesValue{}, Field: "value", Data: p}, nil
		},
		"Ping": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			return &wrapperspb.BytesValue{}, nil
		},
	}})
	// The server holds its end of the stock client's connection once a
	// call went through.
	if err := c.Call(context.Background(), "test.Svc", "Ping", &wrapperspb.BytesValue{}, &wrapperspb.BytesValue{}); err != nil {
		t.Fatal(err)
	}
	fds := countFDs(t)
	r := dialRaw(t, sock)
	r.send(wire.Header{StreamID: 1, Type: wire.TypeRequest}, wire.AppendRequest(nil, "test.Svc", "Read", nil, 0, nil))
	<-replied
	// Read the header only: the splice fills the socket and waits.
	var hdr [wire.HeaderLen]byte
	if _, err := io.ReadFull(r.conn, hdr[:]); err != nil {
		t.Fatal(err)
	}
	if h := wire.ParseHeader(hdr[:]); int(h.Length) < len(want) {
		t.Fatalf("frame length %d, want at least the %d held", h.Length, len(want))
	}
	r.conn.Close()
	select {
	case <-released:
	case <-time.After(10 * time.Second):
		t.Fatal("the pipe was not released after the client left")
	}
	waitFor(t, func() bool { return countFDs(t) <= fds })
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkPipeReply streams a 256 KiB pipe that a writer keeps full
// through ReadStdout-like calls (agent/stdio) of Kata's 32 KiB and of
// 1 MiB, with the bytes read and copied into the frame ("copy": Read) or
// held and spliced from the pipe into the socket ("splice":
// ReadSpliceable). The client reads into one reused buffer.
func BenchmarkPipeReply(b *testing.B) {
	for _, readLen := range []int{32 << 10, 64 << 10, 1 << 20} {
		for _, mode := range []string{"copy", "splice"} {
			b.Run(fmt.Sprintf("len=%dKiB/%s", readLen>>10, mode), func(b *testing.B) {
				benchPipeReply(b, 256<<10, readLen, mode == "splice")
			})
		}
	}
}

func benchPipeReply(b *testing.B, pipeSize, readLen int, splice bool) {
	streams, err := stdio.NewPipes(pipeSize)
	if err != nil {
		b.Fatal(err)
	}
	defer streams.Close()
	_, w, _ := streams.ChildStdio()
	stopWriter := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		chunk := make([]byte, 1<<20)
		for {
			select {
			case <-stopWriter:
				return
			default:
			}
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}()
	// Closing the read end fails the writer's blocked write with EPIPE.
	defer func() { close(stopWriter); streams.Close(); <-writerDone; streams.CloseChildEnds() }()

	s, err := New(Options{Log: slog.New(slog.DiscardHandler), Implementation: os.Getenv(ImplementationEnv)})
	if err != nil {
		b.Fatal(err)
	}
	s.Register("test.Svc", map[string]ttrpc.Method{
		"Read": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			if !splice {
				data, err := streams.Read(ctx, stdio.Stdout, readLen)
				return &wrapperspb.BytesValue{Value: data}, err
			}
			data, pipe, err := streams.ReadSpliceable(ctx, stdio.Stdout, readLen)
			if pipe != nil {
				return &replysplice.Reply{Message: &wrapperspb.BytesValue{}, Field: "value", Data: pipe}, nil
			}
			return &wrapperspb.BytesValue{Value: data}, err
		},
	})
	c := newBenchClient(b, serveForBench(b, s), "test.Svc", "Read", 1<<20+64)
	var total int64
	b.ResetTimer()
	for b.Loop() {
		total += int64(len(c.call()))
	}
	b.ReportMetric(float64(total)/float64(b.N), "B/reply")
	b.ReportMetric(float64(total)/b.Elapsed().Seconds()/1e6, "MB/s")
}

// Every connection's send buffer holds a whole 1 MiB reply (the kernel
// reports twice what was set, for its bookkeeping).
func TestConnectionSendBufferHoldsAReply(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	f := os.NewFile(uintptr(fds[0]), "server end")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	s, err := New(Options{Log: slog.New(slog.DiscardHandler), Implementation: os.Getenv(ImplementationEnv)})
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(s, nc, methodTable{})
	defer c.cancel()
	var size int
	var gerr error
	if err := c.raw.Control(func(fd uintptr) { size, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil || size < 2*sendBuffer {
		t.Errorf("connection send buffer %d bytes (%v), want at least %d", size, gerr, 2*sendBuffer)
	}
}
