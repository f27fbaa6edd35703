package compat

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/wren-vm/wren/protocols/agentpb"
)

// agentStub answers the few RPCs these tests make. The embedded interface is
// nil: any other method would panic, which ttrpc turns into an error.
type agentStub struct {
	agentpb.AgentServiceService

	mu   sync.Mutex
	exec *agentpb.ExecProcessRequest
}

func (s *agentStub) GetGuestDetails(_ context.Context, req *agentpb.GuestDetailsRequest) (*agentpb.GuestDetailsResponse, error) {
	resp := &agentpb.GuestDetailsResponse{AgentDetails: &agentpb.AgentDetails{Version: "stub", InitDaemon: true}}
	if req.GetMemBlockSize() {
		resp.MemBlockSizeBytes = 128 << 20
	}
	return resp, nil
}

func (s *agentStub) ExecProcess(_ context.Context, req *agentpb.ExecProcessRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exec = req
	return &emptypb.Empty{}, nil
}

type healthStub struct{}

func (healthStub) Check(context.Context, *agentpb.CheckRequest) (*agentpb.HealthCheckResponse, error) {
	return &agentpb.HealthCheckResponse{Status: agentpb.HealthCheckResponse_SERVING}, nil
}

func (healthStub) Version(context.Context, *agentpb.CheckRequest) (*agentpb.VersionCheckResponse, error) {
	return &agentpb.VersionCheckResponse{GrpcVersion: "0.0.1", AgentVersion: "stub"}, nil
}

// registrations are the two ways the generated code registers the
// services: protoc-gen-go-ttrpc's Register functions, and the descriptions
// of protoc-gen-go-ttrpcdesc (what agent/server serves) passed to
// RegisterService.
var registrations = []struct {
	name     string
	register func(*ttrpc.Server, agentpb.AgentServiceService)
}{
	{"Register", func(srv *ttrpc.Server, agent agentpb.AgentServiceService) {
		agentpb.RegisterAgentServiceService(srv, agent)
		agentpb.RegisterHealthService(srv, healthStub{})
	}},
	{"ServiceDesc", func(srv *ttrpc.Server, agent agentpb.AgentServiceService) {
		srv.RegisterService(agentpb.AgentServiceServiceName, agentpb.AgentServiceServiceDesc(agent))
		srv.RegisterService(agentpb.HealthServiceName, agentpb.HealthServiceDesc(healthStub{}))
	}},
}

// serve starts a ttrpc server with both services, registered by register,
// on a unix socket and returns a client connected to it.
func serve(t *testing.T, agent agentpb.AgentServiceService, register func(*ttrpc.Server, agentpb.AgentServiceService)) *ttrpc.Client {
	t.Helper()
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatalf("new ttrpc server: %v", err)
	}
	register(srv, agent)

	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "agent.sock"))
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), l) }()

	conn, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	client := ttrpc.NewClient(conn)
	t.Cleanup(func() {
		client.Close()
		srv.Close()
		if err := <-done; err != nil && !errors.Is(err, ttrpc.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return client
}

func TestTTRPCGeneratedClients(t *testing.T) {
	for _, r := range registrations {
		t.Run(r.name, func(t *testing.T) { testGeneratedClients(t, serve(t, &agentStub{}, r.register)) })
	}
}

func testGeneratedClients(t *testing.T, client *ttrpc.Client) {
	ctx := context.Background()

	hc, err := agentpb.NewHealthClient(client).Check(ctx, &agentpb.CheckRequest{})
	if err != nil {
		t.Fatalf("Health.Check: %v", err)
	}
	if hc.GetStatus() != agentpb.HealthCheckResponse_SERVING {
		t.Errorf("Health.Check status %v, want SERVING", hc.GetStatus())
	}

	gd, err := agentpb.NewAgentServiceClient(client).GetGuestDetails(ctx, &agentpb.GuestDetailsRequest{MemBlockSize: true})
	if err != nil {
		t.Fatalf("GetGuestDetails: %v", err)
	}
	if gd.GetMemBlockSizeBytes() != 128<<20 || gd.GetAgentDetails().GetVersion() != "stub" || !gd.GetAgentDetails().GetInitDaemon() {
		t.Errorf("GetGuestDetails answered %v", gd)
	}
}

// TestTTRPCByName calls the server the way a Kata shim does: by the service
// and method strings alone, with no generated client code involved.
func TestTTRPCByName(t *testing.T) {
	for _, r := range registrations {
		t.Run(r.name, func(t *testing.T) {
			stub := &agentStub{}
			testByName(t, stub, serve(t, stub, r.register))
		})
	}
}

func testByName(t *testing.T, stub *agentStub, client *ttrpc.Client) {
	ctx := context.Background()

	req := &agentpb.ExecProcessRequest{
		ContainerId: "ctr",
		ExecId:      "exec-1",
		Process:     &agentpb.Process{Args: []string{"/bin/sh", "-c", "true"}, Terminal: true},
		StdoutPort:  1030,
	}
	if err := client.Call(ctx, "grpc.AgentService", "ExecProcess", req, &emptypb.Empty{}); err != nil {
		t.Fatalf("call grpc.AgentService/ExecProcess: %v", err)
	}
	stub.mu.Lock()
	got := stub.exec
	stub.mu.Unlock()
	if !proto.Equal(got, req) {
		t.Errorf("server saw %v, sent %v", got, req)
	}

	var version agentpb.VersionCheckResponse
	if err := client.Call(ctx, "grpc.Health", "Version", &agentpb.CheckRequest{}, &version); err != nil {
		t.Fatalf("call grpc.Health/Version: %v", err)
	}
	if version.GetGrpcVersion() != "0.0.1" {
		t.Errorf("Version.grpc_version = %q", version.GetGrpcVersion())
	}

	// A method name outside the API must come back as Unimplemented, not
	// reach some other handler.
	err := client.Call(ctx, "grpc.AgentService", "ListProcesses", &emptypb.Empty{}, &emptypb.Empty{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("removed RPC ListProcesses: got %v, want Unimplemented", err)
	}
}

// TestWireBytes checks encodings computed by hand from the Kata field
// numbers, independent of any descriptor.
func TestWireBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  proto.Message
		want []byte
	}{
		{
			// container_id=1 (bytes), stdin_port=9 (varint).
			name: "CreateContainerRequest",
			msg:  &agentpb.CreateContainerRequest{ContainerId: "c", StdinPort: 5},
			want: []byte{0x0a, 0x01, 'c', 0x48, 0x05},
		},
		{
			// data=2: field 1 is unused in Kata's ReseedRandomDevRequest.
			name: "ReseedRandomDevRequest",
			msg:  &agentpb.ReseedRandomDevRequest{Data: []byte{0xff}},
			want: []byte{0x12, 0x01, 0xff},
		},
		{
			// status=1 as a negative int32: ten-byte varint.
			name: "WaitProcessResponse",
			msg:  &agentpb.WaitProcessResponse{Status: -1},
			want: []byte{0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		},
		{
			// ErrnoRet oneof: an explicit zero is still sent.
			name: "LinuxSyscall",
			msg:  &agentpb.LinuxSyscall{ErrnoRet: &agentpb.LinuxSyscall_Errnoret{Errnoret: 0}},
			want: []byte{0x18, 0x00},
		},
	} {
		got, err := proto.MarshalOptions{Deterministic: true}.Marshal(tc.msg)
		if err != nil {
			t.Fatalf("%s: marshal: %v", tc.name, err)
		}
		if !bytes.Equal(got, tc.want) {
			t.Errorf("%s: encoded % x, want % x", tc.name, got, tc.want)
		}
	}
}
