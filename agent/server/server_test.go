package server

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startTestServer serves a "test.Svc" service with the given methods on a
// unix socket and returns a client to it.
//
// stop shuts the server down and returns what Serve returned; it is safe
// to call more than once.
func startTestServer(t *testing.T, methods map[string]ttrpc.Method) (c *ttrpc.Client, logs *syncBuffer, stop func() error) {
	t.Helper()
	c, _, logs, stop = startServer(t, map[string]map[string]ttrpc.Method{"test.Svc": methods})
	return c, logs, stop
}

// startServer serves the given services and returns a stock ttrpc client
// and the socket path.
func startServer(t *testing.T, services map[string]map[string]ttrpc.Method) (c *ttrpc.Client, sock string, logs *syncBuffer, stop func() error) {
	t.Helper()
	logs = &syncBuffer{}
	s, err := New(Options{Log: slog.New(slog.NewJSONHandler(logs, nil)), Implementation: os.Getenv(ImplementationEnv)})
	if err != nil {
		t.Fatal(err)
	}
	for name, methods := range services {
		s.Register(name, methods)
	}
	addr := "unix://" + filepath.Join(t.TempDir(), "s.sock")
	ln, err := Listen(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	stop = sync.OnceValue(func() error { cancel(); return <-done })
	t.Cleanup(func() { _ = stop() }) // tests that check the result call stop themselves
	conn, err := net.Dial("unix", strings.TrimPrefix(addr, "unix://"))
	if err != nil {
		t.Fatal(err)
	}
	c = ttrpc.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	return c, strings.TrimPrefix(addr, "unix://"), logs, stop
}

// bothServers runs test once with the package's own server and once with
// the stock ttrpc server (ImplementationEnv=stock): both must behave the
// same to clients.
func bothServers(t *testing.T, test func(t *testing.T)) {
	t.Run("wren", func(t *testing.T) { t.Setenv(ImplementationEnv, ""); test(t) })
	t.Run("stock", func(t *testing.T) { t.Setenv(ImplementationEnv, "stock"); test(t) })
}

func TestPanicBecomesInternal(t *testing.T) { bothServers(t, testPanicBecomesInternal) }

func testPanicBecomesInternal(t *testing.T) {
	c, logs, _ := startTestServer(t, map[string]ttrpc.Method{
		"Boom": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			var m []int
			i := len(m)
			_ = m[i] // an index out of range: a real runtime panic
			return &emptypb.Empty{}, nil
		},
		"Fine": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			return &emptypb.Empty{}, nil
		},
	})
	ctx := context.Background()
	err := c.Call(ctx, "test.Svc", "Boom", &emptypb.Empty{}, &emptypb.Empty{})
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "panic") {
		t.Fatalf("Boom: %v, want Internal mentioning the panic", err)
	}
	if err := c.Call(ctx, "test.Svc", "Fine", &emptypb.Empty{}, &emptypb.Empty{}); err != nil {
		t.Fatalf("Fine after a panic: %v", err)
	}
	if !strings.Contains(logs.String(), "handler panic recovered") || !strings.Contains(logs.String(), "goroutine") {
		t.Errorf("panic not logged with a stack:\n%s", logs.String())
	}
}

func TestShutdownLetsInFlightCallFinish(t *testing.T) {
	bothServers(t, testShutdownLetsInFlightCallFinish)
}

func testShutdownLetsInFlightCallFinish(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	c, _, stop := startTestServer(t, map[string]ttrpc.Method{
		"Slow": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			close(entered)
			<-release
			return &emptypb.Empty{}, nil
		},
	})
	callErr := make(chan error, 1)
	go func() {
		callErr <- c.Call(context.Background(), "test.Svc", "Slow", &emptypb.Empty{}, &emptypb.Empty{})
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	time.Sleep(50 * time.Millisecond) // let shutdown begin while the call is running
	close(release)
	if err := <-callErr; err != nil {
		t.Fatalf("in-flight call during shutdown: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen("unix://"+p, nil); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "keep me" {
		t.Fatal("Listen clobbered a regular file")
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	p := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln2, err := Listen("unix://"+p, nil)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln2.Close()
}

func TestListenErrors(t *testing.T) {
	for _, addr := range []string{"hvsock:///x:1", "tcp://1:2", "unix://rel"} {
		if _, err := Listen(addr, nil); err == nil {
			t.Errorf("Listen(%q) succeeded", addr)
		}
	}
}
