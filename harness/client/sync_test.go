package client_test

import (
	"context"
	"errors"
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
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/wren-vm/wren/agent/server"
	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/harness/testagent"
	"github.com/wren-vm/wren/protocols/agentpb"
)

func TestSyncAgainstAgent(t *testing.T) {
	a := testagent.Start(t)
	c, err := client.DialSync(context.Background(), a.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		resp, err := c.Health.Check(ctx, &agentpb.CheckRequest{})
		if err != nil || resp.GetStatus() != agentpb.HealthCheckResponse_SERVING {
			t.Fatalf("Check %d: %v, %v", i, resp, err)
		}
	}
	v, err := c.Health.Version(ctx, &agentpb.CheckRequest{})
	if err != nil || v.GetGrpcVersion() != "0.0.1" {
		t.Fatalf("Version: %v, %v", v, err)
	}
	err = c.Call(ctx, "grpc.AgentService", "SetPolicy", &agentpb.SetPolicyRequest{}, &emptypb.Empty{})
	if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "SetPolicy") {
		t.Fatalf("SetPolicy: %v, want Unimplemented naming the method", err)
	}
	if _, err := c.Health.Check(ctx, &agentpb.CheckRequest{}); err != nil {
		t.Fatalf("Check after an error status: %v", err)
	}
}

// serveTest serves test.Svc with Echo and Wait on the agent's server (or
// the stock ttrpc server) and returns its address.
func serveTest(t *testing.T, stock bool) string {
	t.Helper()
	return serveService(t, stock, "test.Svc", map[string]ttrpc.Method{
		"Echo": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			var v wrapperspb.StringValue
			if err := unmarshal(&v); err != nil {
				return nil, err
			}
			return &v, nil
		},
		"Wait": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
	})
}

// serveService serves methods as service on the agent's server (or the
// stock ttrpc server) and returns its address.
func serveService(t *testing.T, stock bool, service string, methods map[string]ttrpc.Method) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	wg.Add(1)
	if stock {
		s, err := ttrpc.NewServer()
		if err != nil {
			t.Fatal(err)
		}
		s.Register(service, methods)
		go func() { defer wg.Done(); _ = s.Serve(ctx, ln) }()
		t.Cleanup(func() { s.Close() })
	} else {
		s, err := server.New(server.Options{Log: slog.New(slog.DiscardHandler), Implementation: os.Getenv(server.ImplementationEnv)})
		if err != nil {
			t.Fatal(err)
		}
		s.Register(service, methods)
		go func() { defer wg.Done(); _ = s.Serve(ctx, ln) }()
	}
	return "unix://" + sock
}

func TestSyncCallsAndDeadlines(t *testing.T) {
	for _, stock := range []bool{false, true} {
		name := map[bool]string{false: "wren server", true: "stock server"}[stock]
		t.Run(name, func(t *testing.T) {
			addr := serveTest(t, stock)
			c, err := client.DialSync(context.Background(), addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			for _, s := range []string{"a", strings.Repeat("b", 100<<10), ""} {
				var out wrapperspb.StringValue
				if err := c.Call(ctx, "test.Svc", "Echo", wrapperspb.String(s), &out); err != nil || out.Value != s {
					t.Fatalf("Echo(%d bytes): %d bytes, %v", len(s), len(out.Value), err)
				}
			}
			// The deadline reaches the server as the call's timeout.
			dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			err = c.Call(dctx, "test.Svc", "Wait", &emptypb.Empty{}, &emptypb.Empty{})
			if status.Code(err) != codes.DeadlineExceeded && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Wait with a deadline: %v, want DeadlineExceeded", err)
			}
		})
	}
}

func TestSyncCancelledCallClosesConnection(t *testing.T) {
	addr := serveTest(t, false)
	c, err := client.DialSync(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	// No deadline: only the cancellation can end the wait.
	if err := c.Call(ctx, "test.Svc", "Wait", &emptypb.Empty{}, &emptypb.Empty{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Wait: %v, want context.Canceled", err)
	}
	// Its reply could still arrive, so the connection is not reused.
	err = c.Call(context.Background(), "test.Svc", "Echo", wrapperspb.String("x"), &wrapperspb.StringValue{})
	if err == nil || !strings.Contains(err.Error(), "unusable") {
		t.Fatalf("call after an interrupted one: %v, want the connection refused", err)
	}
}
