package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/wren-vm/wren/lib/wire"
)

func TestUnimplementedNamesServiceAndMethod(t *testing.T) {
	bothServers(t, func(t *testing.T) {
		c, _, _ := startTestServer(t, map[string]ttrpc.Method{})
		ctx := context.Background()
		err := c.Call(ctx, "test.Svc", "Missing", &emptypb.Empty{}, &emptypb.Empty{})
		if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "Missing") {
			t.Errorf("unknown method: %v, want Unimplemented naming it", err)
		}
		err = c.Call(ctx, "other.Svc", "X", &emptypb.Empty{}, &emptypb.Empty{})
		if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "other.Svc") {
			t.Errorf("unknown service: %v, want Unimplemented naming it", err)
		}
	})
}

// A call that waits (as WaitProcess does for a container's life) must not
// hold up the other calls multiplexed on the same connection, inline or not.
func TestSlowCallDoesNotBlockOthers(t *testing.T) {
	bothServers(t, func(t *testing.T) {
		entered, release := make(chan struct{}), make(chan struct{})
		echo := func(ctx context.Context, unmarshal func(any) error) (any, error) {
			var v wrapperspb.StringValue
			if err := unmarshal(&v); err != nil {
				return nil, err
			}
			return &v, nil
		}
		c, _, _, _ := startServer(t, map[string]map[string]ttrpc.Method{
			"test.Svc": {
				"Slow": func(ctx context.Context, unmarshal func(any) error) (any, error) {
					close(entered)
					<-release
					return &emptypb.Empty{}, nil
				},
				"Echo": echo,
			},
			"grpc.Health": {"Check": echo}, // answered inline by wren's server
		})
		slow := make(chan error, 1)
		go func() {
			slow <- c.Call(context.Background(), "test.Svc", "Slow", &emptypb.Empty{}, &emptypb.Empty{})
		}()
		<-entered
		for _, svc := range []string{"test.Svc/Echo", "grpc.Health/Check"} {
			service, method, _ := strings.Cut(svc, "/")
			var out wrapperspb.StringValue
			if err := c.Call(context.Background(), service, method, wrapperspb.String(svc), &out); err != nil || out.Value != svc {
				t.Fatalf("%s while Slow runs: %q, %v", svc, out.Value, err)
			}
		}
		close(release)
		if err := <-slow; err != nil {
			t.Fatalf("Slow: %v", err)
		}
	})
}

func TestRequestTimeoutBecomesDeadline(t *testing.T) {
	bothServers(t, func(t *testing.T) {
		got := make(chan error, 1)
		c, _, _ := startTestServer(t, map[string]ttrpc.Method{
			"Wait": func(ctx context.Context, unmarshal func(any) error) (any, error) {
				if _, ok := ctx.Deadline(); !ok {
					got <- errors.New("handler context has no deadline")
					return nil, errors.New("no deadline")
				}
				<-ctx.Done()
				got <- ctx.Err()
				return nil, ctx.Err()
			},
		})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		err := c.Call(ctx, "test.Svc", "Wait", &emptypb.Empty{}, &emptypb.Empty{})
		if status.Code(err) != codes.DeadlineExceeded && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("call: %v, want DeadlineExceeded", err)
		}
		if err := <-got; !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("handler saw %v, want its context's deadline to pass", err)
		}
	})
}

func TestMetadataReachesHandler(t *testing.T) {
	bothServers(t, func(t *testing.T) {
		c, _, _ := startTestServer(t, map[string]ttrpc.Method{
			"Meta": func(ctx context.Context, unmarshal func(any) error) (any, error) {
				md, ok := ttrpc.GetMetadata(ctx)
				if !ok {
					return nil, status.Error(codes.FailedPrecondition, "no metadata")
				}
				v, _ := md.Get("k")
				return wrapperspb.String(strings.Join(v, ",")), nil
			},
		})
		ctx := ttrpc.WithMetadata(context.Background(), ttrpc.MD{"k": {"a", "b"}})
		var out wrapperspb.StringValue
		if err := c.Call(ctx, "test.Svc", "Meta", &emptypb.Empty{}, &out); err != nil || out.Value != "a,b" {
			t.Fatalf("metadata: %q, %v; want a,b", out.Value, err)
		}
	})
}

func TestHandlerResultErrors(t *testing.T) {
	bothServers(t, func(t *testing.T) {
		c, _, _ := startTestServer(t, map[string]ttrpc.Method{
			"Nil": func(ctx context.Context, unmarshal func(any) error) (any, error) {
				var p *emptypb.Empty
				return p, nil
			},
			"NotFound": func(ctx context.Context, unmarshal func(any) error) (any, error) {
				return nil, os.ErrNotExist
			},
			"Big": func(ctx context.Context, unmarshal func(any) error) (any, error) {
				var n wrapperspb.UInt32Value
				if err := unmarshal(&n); err != nil {
					return nil, err
				}
				return wrapperspb.Bytes(bytes.Repeat([]byte{'x'}, int(n.Value))), nil
			},
		})
		ctx := context.Background()
		if err := c.Call(ctx, "test.Svc", "Nil", &emptypb.Empty{}, &emptypb.Empty{}); err == nil {
			t.Error("nil response accepted")
		}
		if err := c.Call(ctx, "test.Svc", "NotFound", &emptypb.Empty{}, &emptypb.Empty{}); status.Code(err) != codes.NotFound {
			t.Errorf("os.ErrNotExist: %v, want NotFound", err)
		}
		// Larger than the pooled buffers, then within the limit.
		for _, n := range []uint32{200 << 10, 4<<20 - 64} {
			var out wrapperspb.BytesValue
			if err := c.Call(ctx, "test.Svc", "Big", wrapperspb.UInt32(n), &out); err != nil || len(out.Value) != int(n) {
				t.Fatalf("Big(%d): %d bytes, %v", n, len(out.Value), err)
			}
		}
		if os.Getenv(ImplementationEnv) == "stock" {
			return // the stock server drops the connection instead of answering
		}
		err := c.Call(ctx, "test.Svc", "Big", wrapperspb.UInt32(5<<20), &wrapperspb.BytesValue{})
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("reply over the 4 MiB limit: %v, want ResourceExhausted", err)
		}
		if err := c.Call(ctx, "test.Svc", "NotFound", &emptypb.Empty{}, &emptypb.Empty{}); status.Code(err) != codes.NotFound {
			t.Fatalf("connection unusable after an oversized reply: %v", err)
		}
	})
}

// rawClient speaks ttrpc frames by hand, to send what a well-behaved client
// never would.
type rawClient struct {
	t    *testing.T
	conn net.Conn
}

func dialRaw(t *testing.T, sock string) *rawClient {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return &rawClient{t: t, conn: conn}
}

func (r *rawClient) send(h wire.Header, body []byte) {
	r.t.Helper()
	if h.Length == 0 {
		h.Length = uint32(len(body))
	}
	b := make([]byte, wire.HeaderLen, wire.HeaderLen+len(body))
	h.Put(b)
	if _, err := r.conn.Write(append(b, body...)); err != nil {
		r.t.Fatalf("write frame: %v", err)
	}
}

// reply reads one response frame and returns its stream id and status.
func (r *rawClient) reply() (uint32, *status.Status, []byte) {
	r.t.Helper()
	var hdr [wire.HeaderLen]byte
	if _, err := io.ReadFull(r.conn, hdr[:]); err != nil {
		r.t.Fatalf("read reply header: %v", err)
	}
	h := wire.ParseHeader(hdr[:])
	body := make([]byte, h.Length)
	if _, err := io.ReadFull(r.conn, body); err != nil {
		r.t.Fatalf("read reply body: %v", err)
	}
	if h.Type != wire.TypeResponse {
		r.t.Fatalf("reply type %d, want a response", h.Type)
	}
	var resp ttrpc.Response
	if err := proto.Unmarshal(body, &resp); err != nil {
		r.t.Fatalf("decode reply: %v", err)
	}
	return h.StreamID, status.FromProto(resp.Status), resp.Payload
}

func TestBadFramesGetStatusesAndConnectionSurvives(t *testing.T) {
	bothServers(t, func(t *testing.T) {
		_, sock, _, _ := startServer(t, map[string]map[string]ttrpc.Method{"test.Svc": {
			"Echo": func(ctx context.Context, unmarshal func(any) error) (any, error) {
				var v wrapperspb.StringValue
				if err := unmarshal(&v); err != nil {
					return nil, err
				}
				return &v, nil
			},
		}})
		r := dialRaw(t, sock)
		req := func(payload []byte) []byte {
			return wire.AppendRequest(nil, "test.Svc", "Echo", payload, 0, nil)
		}
		good, _ := proto.Marshal(wrapperspb.String("hi"))
		for _, tc := range []struct {
			name string
			h    wire.Header
			body []byte
			want codes.Code
		}{
			{"even stream id", wire.Header{StreamID: 2, Type: wire.TypeRequest}, req(good), codes.InvalidArgument},
			{"first call", wire.Header{StreamID: 5, Type: wire.TypeRequest}, req(good), codes.OK},
			{"reused stream id", wire.Header{StreamID: 5, Type: wire.TypeRequest}, req(good), codes.InvalidArgument},
			{"lower stream id", wire.Header{StreamID: 3, Type: wire.TypeRequest}, req(good), codes.InvalidArgument},
			{"data for no stream", wire.Header{StreamID: 7, Type: wire.TypeData}, good, codes.InvalidArgument},
			{"garbage envelope", wire.Header{StreamID: 9, Type: wire.TypeRequest}, []byte{0x0a, 0xff, 0xff, 0x01, 'x'}, codes.InvalidArgument},
			{"garbage payload", wire.Header{StreamID: 11, Type: wire.TypeRequest}, req([]byte{0x0a, 0xff, 0xff, 0x01, 'x'}), codes.Internal},
			{"oversized", wire.Header{StreamID: 13, Type: wire.TypeRequest, Length: wire.MaxData + 1}, bytes.Repeat([]byte{0}, wire.MaxData+1), codes.ResourceExhausted},
			{"after all that", wire.Header{StreamID: 15, Type: wire.TypeRequest}, req(good), codes.OK},
		} {
			r.send(tc.h, tc.body)
			id, st, payload := r.reply()
			if id != tc.h.StreamID || st.Code() != tc.want {
				t.Fatalf("%s: stream %d status %v, want stream %d %v", tc.name, id, st, tc.h.StreamID, tc.want)
			}
			if tc.want == codes.OK {
				var v wrapperspb.StringValue
				if err := proto.Unmarshal(payload, &v); err != nil || v.Value != "hi" {
					t.Fatalf("%s: payload %q, %v", tc.name, v.Value, err)
				}
			}
		}
		// An unknown message type is ignored; the next call is answered.
		r.send(wire.Header{StreamID: 17, Type: 0x7f}, []byte("future"))
		r.send(wire.Header{StreamID: 19, Type: wire.TypeRequest}, req(good))
		if id, st, _ := r.reply(); id != 19 || st.Code() != codes.OK {
			t.Fatalf("after an unknown type: stream %d %v", id, st)
		}
	})
}

// countFDs is the number of this process's open file descriptors.
func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// Connections that come and go, including mid-call and mid-frame, leave
// no goroutine and no fd behind.
func TestConnectionsLeaveNothingBehind(t *testing.T) {
	bothServers(t, func(t *testing.T) {
		release := make(chan struct{})
		_, sock, _, _ := startServer(t, map[string]map[string]ttrpc.Method{"test.Svc": {
			"Fast": func(ctx context.Context, unmarshal func(any) error) (any, error) { return &emptypb.Empty{}, nil },
			"Block": func(ctx context.Context, unmarshal func(any) error) (any, error) {
				select {
				case <-ctx.Done():
				case <-release:
				}
				return &emptypb.Empty{}, nil
			},
		}})
		settle := func() (int, int) {
			runtime.GC()
			time.Sleep(20 * time.Millisecond)
			return runtime.NumGoroutine(), countFDs(t)
		}
		g0, f0 := settle()
		for i := 0; i < 50; i++ {
			conn, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			c := ttrpc.NewClient(conn)
			if err := c.Call(context.Background(), "test.Svc", "Fast", &emptypb.Empty{}, &emptypb.Empty{}); err != nil {
				t.Fatal(err)
			}
			switch i % 3 {
			case 1: // leave a call blocked in the handler
				go func() { _ = c.Call(context.Background(), "test.Svc", "Block", &emptypb.Empty{}, &emptypb.Empty{}) }() // never answered: the server closes it
				time.Sleep(time.Millisecond)
			case 2: // half a frame
				if _, err := conn.Write([]byte{0, 0, 1, 0, 0, 0, 0, 9, 1, 0, 'x'}); err != nil {
					t.Fatal(err)
				}
			}
			c.Close()
		}
		var g, f int
		for try := 0; try < 100; try++ {
			if g, f = settle(); g <= g0 && f <= f0 {
				return
			}
		}
		close(release)
		t.Fatalf("after 50 connections closed: goroutines %d → %d, fds %d → %d", g0, g, f0, f)
	})
}

// The dispatch table holds what was registered, inline methods marked; a
// second registration of a service name is refused, as ttrpc refuses it.
func TestMethodTableFromRegisteredServices(t *testing.T) {
	s, err := New(Options{Log: slog.New(slog.DiscardHandler), Implementation: os.Getenv(ImplementationEnv)})
	if err != nil {
		t.Fatal(err)
	}
	fn := func(ctx context.Context, unmarshal func(any) error) (any, error) { return &emptypb.Empty{}, nil }
	s.Register("grpc.Health", map[string]ttrpc.Method{"Check": fn, "Version": fn})
	s.RegisterService("grpc.AgentService", &ttrpc.ServiceDesc{Methods: map[string]ttrpc.Method{"WaitProcess": fn}})
	tbl, err := buildMethods(s.registered(), inlineMethods)
	if err != nil {
		t.Fatal(err)
	}
	for full, inline := range map[string]bool{"/grpc.Health/Check": true, "/grpc.Health/Version": true, "/grpc.AgentService/WaitProcess": false} {
		svc, name, _ := strings.Cut(full[1:], "/")
		m, _, ok := tbl.lookup([]byte(svc), []byte(name))
		if !ok || m.full != full || m.inline != inline {
			t.Errorf("%s: found %v, entry %+v; want inline=%v", full, ok, m, inline)
		}
	}
	if _, known, _ := tbl.lookup([]byte("nope"), []byte("X")); known {
		t.Error("unregistered service found")
	}
	defer func() {
		if recover() == nil {
			t.Error("a second grpc.Health was registered")
		}
	}()
	s.Register("grpc.Health", map[string]ttrpc.Method{"Check": fn})
}
