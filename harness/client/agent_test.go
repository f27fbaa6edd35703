package client_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/wren-vm/wren/agent/address"
	"github.com/wren-vm/wren/harness/testagent"
	"github.com/wren-vm/wren/protocols/agentpb"
)

func TestAgentHealth(t *testing.T) {
	a := testagent.Start(t)
	c := a.Dial(t)
	ctx := context.Background()
	resp, err := c.Health.Check(ctx, &agentpb.CheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus() != agentpb.HealthCheckResponse_SERVING {
		t.Errorf("Check status = %v, want SERVING", resp.GetStatus())
	}
	v, err := c.Health.Version(ctx, &agentpb.CheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if v.GetAgentVersion() == "" || v.GetGrpcVersion() != "0.0.1" {
		t.Errorf("Version = %+v", v)
	}
}

func TestAgentUnimplemented(t *testing.T) {
	a := testagent.Start(t)
	c := a.Dial(t)
	_, err := c.Agent.SetPolicy(context.Background(), &agentpb.SetPolicyRequest{Policy: "package agent_policy"})
	if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "SetPolicy") {
		t.Fatalf("SetPolicy: %v, want Unimplemented naming the method", err)
	}
	// The connection stays usable after an error.
	if _, err := c.Health.Check(context.Background(), &agentpb.CheckRequest{}); err != nil {
		t.Fatalf("Check after Unimplemented: %v", err)
	}
}

// rawConn speaks ttrpc frames by hand, to send what a well-behaved client
// never would.
type rawConn struct {
	t    *testing.T
	conn net.Conn
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	a, err := address.Parse(addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("unix", a.UnixName())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return &rawConn{t: t, conn: conn}
}

const frameRequest = 1

func (r *rawConn) writeFrame(streamID uint32, payload []byte) {
	r.t.Helper()
	var hdr [10]byte
	binary.BigEndian.PutUint32(hdr[0:], uint32(len(payload)))
	binary.BigEndian.PutUint32(hdr[4:], streamID)
	hdr[8] = frameRequest
	if _, err := r.conn.Write(append(hdr[:], payload...)); err != nil {
		r.t.Fatalf("write frame: %v", err)
	}
}

func (r *rawConn) readResponse() *ttrpc.Response {
	r.t.Helper()
	var hdr [10]byte
	if _, err := io.ReadFull(r.conn, hdr[:]); err != nil {
		r.t.Fatalf("read response header: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[0:]))
	if _, err := io.ReadFull(r.conn, body); err != nil {
		r.t.Fatalf("read response body: %v", err)
	}
	var resp ttrpc.Response
	if err := proto.Unmarshal(body, &resp); err != nil {
		r.t.Fatalf("decode response: %v", err)
	}
	return &resp
}

func request(t *testing.T, service, method string, payload []byte) []byte {
	t.Helper()
	b, err := proto.Marshal(&ttrpc.Request{Service: service, Method: method, Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAgentRejectsInvalidProtobuf(t *testing.T) {
	a := testagent.Start(t)
	r := dialRaw(t, a.Addr)
	// A length-delimited field whose length runs past the end of the body.
	garbage := []byte{0x0a, 0xff, 0xff, 0x01, 'x'}
	r.writeFrame(1, request(t, "grpc.AgentService", "CreateContainer", garbage))
	resp := r.readResponse()
	if resp.GetStatus().GetCode() == int32(codes.OK) {
		t.Fatalf("invalid protobuf body accepted: %+v", resp)
	}
	// Same connection, next stream: the agent is still serving.
	check, _ := proto.Marshal(&agentpb.CheckRequest{})
	r.writeFrame(3, request(t, "grpc.Health", "Check", check))
	if resp := r.readResponse(); resp.GetStatus().GetCode() != int32(codes.OK) {
		t.Fatalf("Check after bad body: %+v", resp.GetStatus())
	}
}

func TestAgentRefusesOversizedFrame(t *testing.T) {
	a := testagent.Start(t)
	r := dialRaw(t, a.Addr)
	const limit = 4 << 20 // ttrpc's message size limit
	big := request(t, "grpc.AgentService", "CopyFile", bytes.Repeat([]byte{'a'}, limit+1024))
	r.writeFrame(1, big)
	resp := r.readResponse()
	if got := codes.Code(resp.GetStatus().GetCode()); got != codes.ResourceExhausted {
		t.Fatalf("oversized frame: status %v, want ResourceExhausted", got)
	}
	c := a.Dial(t)
	if _, err := c.Health.Check(context.Background(), &agentpb.CheckRequest{}); err != nil {
		t.Fatalf("agent stopped serving after an oversized frame: %v", err)
	}
	if a.Cmd.ProcessState != nil {
		t.Fatalf("agent exited: %v", a.Cmd.ProcessState)
	}
}

func TestAgentSurvivesHalfFrame(t *testing.T) {
	a := testagent.Start(t)
	r := dialRaw(t, a.Addr)
	var hdr [10]byte
	binary.BigEndian.PutUint32(hdr[0:], 1000)
	binary.BigEndian.PutUint32(hdr[4:], 1)
	hdr[8] = frameRequest
	if _, err := r.conn.Write(append(hdr[:], "only part of the body"...)); err != nil {
		t.Fatal(err)
	}
	r.conn.Close()
	c := a.Dial(t)
	if _, err := c.Health.Check(context.Background(), &agentpb.CheckRequest{}); err != nil {
		t.Fatalf("Check after a client vanished mid-frame: %v", err)
	}
}
