package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/harness/testagent"
	"github.com/wren-vm/wren/internal/testbundle"
	"github.com/wren-vm/wren/internal/testroot"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// startContainer creates a sandbox on the agent behind c (once) and runs
// args in a busybox container named id; DestroySandbox ends it when the
// test does.
func startContainer(t *testing.T, c *client.Client, id string, args ...string) {
	t.Helper()
	testroot.Require(t, "running containers")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := c.Agent.CreateSandbox(ctx, &agentpb.CreateSandboxRequest{Hostname: "pod"})
	switch {
	case err == nil:
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := c.Agent.DestroySandbox(ctx, &agentpb.DestroySandboxRequest{}); err != nil {
				t.Errorf("DestroySandbox: %v", err)
			}
		})
	case status.Code(err) != codes.AlreadyExists:
		t.Fatalf("CreateSandbox: %v", err)
	}
	spec := testbundle.Spec(testbundle.Rootfs(t, t.TempDir()), args...)
	if _, err := c.Agent.CreateContainer(ctx, &agentpb.CreateContainerRequest{ContainerId: id, ExecId: id, OCI: ocispec.FromSpec(spec)}); err != nil {
		t.Fatalf("CreateContainer %s: %v", id, err)
	}
	if _, err := c.Agent.StartContainer(ctx, &agentpb.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("StartContainer %s: %v", id, err)
	}
}

func dialSync(t *testing.T, addr string) *client.Sync {
	t.Helper()
	c, err := client.DialSync(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// drain reads a stream with ReadStream until EOF and returns what it read.
func drain(ctx context.Context, c *client.Sync, stderr bool, id string, maxLen int) ([]byte, int, error) {
	var out bytes.Buffer
	for calls := 1; ; calls++ {
		data, err := c.ReadStream(ctx, stderr, id, id, maxLen)
		if err == io.EOF {
			return out.Bytes(), calls, nil
		}
		if err != nil {
			return out.Bytes(), calls, err
		}
		if len(data) == 0 || len(data) > maxLen {
			return out.Bytes(), calls, fmt.Errorf("reply of %d bytes to a read of %d", len(data), maxLen)
		}
		out.Write(data)
	}
}

// A container's stdout and stderr arrive whole and in order through
// ReadStream, each on its own Sync, with replies of many sizes (the
// writer is faster than one reply); the same Sync then serves Call.
func TestReadStreamContainerOutput(t *testing.T) {
	a := testagent.Start(t)
	c := a.Dial(t)
	const lines = 100000
	startContainer(t, c, "talker", "/bin/sh", "-c", fmt.Sprintf("seq 1 %d; echo to-stderr >&2; seq 1 3 >&2", lines))
	var want bytes.Buffer
	for i := 1; i <= lines; i++ {
		fmt.Fprintf(&want, "%d\n", i)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	outSync, errSync := dialSync(t, a.Addr), dialSync(t, a.Addr)
	var (
		wg     sync.WaitGroup
		stderr []byte
		errErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		stderr, _, errErr = drain(ctx, errSync, true, "talker", 1<<10)
	}()
	// 64 KiB: about 9 replies of the 588 895 bytes at least, so the kept
	// buffer is reused.
	stdout, calls, err := drain(ctx, outSync, false, "talker", 64<<10)
	wg.Wait()
	if err != nil {
		t.Fatalf("stdout: %v after %d bytes", err, len(stdout))
	}
	if !bytes.Equal(stdout, want.Bytes()) {
		t.Fatalf("stdout: %d bytes differ from the %d the container wrote (first 40: %q)", len(stdout), want.Len(), stdout[:min(40, len(stdout))])
	}
	if calls < 10 {
		t.Errorf("stdout took %d reads of 64 KiB for %d bytes", calls, len(stdout))
	}
	if errErr != nil || string(stderr) != "to-stderr\n1\n2\n3\n" {
		t.Fatalf("stderr %q, %v", stderr, errErr)
	}

	// EOF stays EOF, and the Sync still makes ordinary calls.
	if data, err := outSync.ReadStream(ctx, false, "talker", "talker", 64<<10); err != io.EOF || data != nil {
		t.Fatalf("read after EOF: %q, %v; want nil, io.EOF", data, err)
	}
	var w agentpb.WaitProcessResponse
	if err := outSync.Call(ctx, "grpc.AgentService", "WaitProcess", &agentpb.WaitProcessRequest{ContainerId: "talker"}, &w); err != nil || w.Status != 0 {
		t.Fatalf("WaitProcess on the reading Sync: %v, %v", &w, err)
	}
}

// ReadStream keeps its reply buffer: a reader draining a busy stream
// allocates nothing per reply (what the Call path cannot do: it decodes
// into fresh messages).
func TestReadStreamReusesItsBuffer(t *testing.T) {
	// Quiet logs: the agent's stderr is collected by this process.
	a := testagent.Start(t, "--log-level", "warn")
	c := a.Dial(t)
	startContainer(t, c, "zeros", "/bin/cat", "/dev/zero")
	s := dialSync(t, a.Addr)
	ctx := context.Background() // no deadline: nothing to arm per call
	read := func() int {
		data, err := s.ReadStream(ctx, false, "zeros", "zeros", 256<<10)
		if err != nil {
			t.Fatalf("ReadStream: %v", err)
		}
		if i := bytes.IndexFunc(data, func(r rune) bool { return r != 0 }); i >= 0 {
			t.Fatalf("byte %d of a reply from cat /dev/zero is %#x", i, data[i])
		}
		return len(data)
	}
	for range 5 {
		read() // the first reply sizes the buffer
	}
	const calls = 200
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	total := 0
	for range calls {
		total += read()
	}
	runtime.ReadMemStats(&after)
	allocs := after.Mallocs - before.Mallocs
	bytesPerCall := float64(after.TotalAlloc-before.TotalAlloc) / calls
	t.Logf("%d replies, %d bytes: %d allocations, %.0f bytes allocated per reply", calls, total, allocs, bytesPerCall)
	// Slack for this process's other goroutines (the agent's log copy,
	// the runtime): well under one allocation, and under 64 bytes, per
	// reply of (here) kilobytes.
	if allocs >= calls/4 || bytesPerCall >= 64 {
		t.Errorf("%d allocations, %.0f bytes per reply over %d replies (avg %d bytes): ReadStream allocates per reply",
			allocs, bytesPerCall, calls, total/calls)
	}
}

func TestReadStreamErrors(t *testing.T) {
	a := testagent.Start(t)
	c := a.Dial(t)
	startContainer(t, c, "quiet", "/bin/sleep", "1000")
	s := dialSync(t, a.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, stderr := range []bool{false, true} {
		_, err := s.ReadStream(ctx, stderr, "nosuch", "nosuch", 1024)
		method := map[bool]string{false: "ReadStdout", true: "ReadStderr"}[stderr]
		if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), method) {
			t.Errorf("%s of an unknown container: %v, want NotFound naming the method", method, err)
		}
	}
	// An error status leaves the connection in step.
	if _, err := s.Health.Check(ctx, &agentpb.CheckRequest{}); err != nil {
		t.Fatalf("Check after NotFound: %v", err)
	}

	// A context that has already ended sends nothing: the Sync stays usable.
	done, cancelDone := context.WithCancel(ctx)
	cancelDone()
	if _, err := s.ReadStream(done, false, "quiet", "quiet", 1024); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadStream with a cancelled context: %v, want context.Canceled", err)
	}
	if _, err := s.Health.Check(ctx, &agentpb.CheckRequest{}); err != nil {
		t.Fatalf("Check after a cancelled context: %v", err)
	}

	// Cancelled while the agent waits for output that never comes: the
	// read ends, and the connection is not reused (its reply may come).
	rctx, rcancel := context.WithCancel(ctx)
	go func() { time.Sleep(50 * time.Millisecond); rcancel() }()
	if _, err := s.ReadStream(rctx, false, "quiet", "quiet", 1024); !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadStream cancelled mid-call: %v, want context.Canceled", err)
	}
	if _, err := s.ReadStream(ctx, false, "quiet", "quiet", 1024); err == nil || !strings.Contains(err.Error(), "unusable") {
		t.Fatalf("ReadStream after an interrupted call: %v, want the connection refused", err)
	}

	// A deadline travels to the agent as the call's timeout, and ends a
	// read there or here.
	s2 := dialSync(t, a.Addr)
	dctx, dcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer dcancel()
	if _, err := s2.ReadStream(dctx, true, "quiet", "quiet", 1024); status.Code(err) != codes.DeadlineExceeded && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ReadStream past its deadline: %v, want DeadlineExceeded", err)
	}
}

// streamReplies are the payloads a test server returns for ReadStdout, by
// container id: what the agent never sends but a newer one, or another
// implementation, could.
var streamReplies = map[string][]byte{
	// Unknown fields of every wire type around the data, a data field
	// with the wrong wire type (unknown, as protobuf treats it), and an
	// earlier data field that the last one overrides.
	"extra": concat(
		protowire.AppendVarint(protowire.AppendTag(nil, 7, protowire.VarintType), 300),
		protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte("stale")),
		protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1),
		protowire.AppendFixed32(protowire.AppendTag(nil, 9, protowire.Fixed32Type), 1),
		protowire.AppendTag(protowire.AppendVarint(protowire.AppendTag(protowire.AppendTag(nil, 10, protowire.StartGroupType), 1, protowire.VarintType), 5), 10, protowire.EndGroupType),
		protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte("hello")),
		protowire.AppendFixed64(protowire.AppendTag(nil, 2000, protowire.Fixed64Type), 1),
		protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), []byte("trailing")),
	),
	"empty":     nil,
	"truncated": {0x0a, 0x10, 'a', 'b'}, // data of 16 bytes, 2 present
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// rawPayload is a reply message whose encoding is exactly its bytes: an
// Empty holding them as unknown fields, which marshalling writes as is.
func rawPayload(b []byte) proto.Message {
	m := &emptypb.Empty{}
	m.ProtoReflect().SetUnknown(b)
	return m
}

func TestReadStreamDecodesAnyReply(t *testing.T) {
	methods := map[string]ttrpc.Method{
		"ReadStdout": func(ctx context.Context, unmarshal func(any) error) (any, error) {
			var req agentpb.ReadStreamRequest
			if err := unmarshal(&req); err != nil {
				return nil, err
			}
			// The hand-encoded request must decode as the agent sees it.
			if req.ExecId != "exec-"+req.ContainerId || req.Len != 4096 {
				return nil, status.Errorf(codes.InvalidArgument, "request decoded as %v", &req)
			}
			if req.ContainerId == "denied" {
				return nil, status.Error(codes.PermissionDenied, "no stdout for you")
			}
			b, ok := streamReplies[req.ContainerId]
			if !ok {
				return nil, status.Errorf(codes.NotFound, "no reply %q", req.ContainerId)
			}
			return rawPayload(b), nil
		},
	}
	for _, stock := range []bool{false, true} {
		t.Run(map[bool]string{false: "wren server", true: "stock server"}[stock], func(t *testing.T) {
			s := dialSync(t, serveService(t, stock, "grpc.AgentService", methods))
			ctx := context.Background()
			read := func(id string) ([]byte, error) { return s.ReadStream(ctx, false, id, "exec-"+id, 4096) }
			if data, err := read("extra"); err != nil || string(data) != "hello" {
				t.Fatalf("reply with unknown fields: %q, %v; want \"hello\"", data, err)
			}
			if data, err := read("empty"); err != io.EOF || data != nil {
				t.Fatalf("empty reply: %q, %v; want nil, io.EOF", data, err)
			}
			if _, err := read("denied"); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "no stdout for you") {
				t.Fatalf("error status: %v, want PermissionDenied with its message", err)
			}
			if data, err := read("truncated"); err == nil || !strings.Contains(err.Error(), "decode reply") {
				t.Fatalf("malformed reply: %q, %v; want a decode error", data, err)
			}
			// The frame was read whole: the connection is still in step.
			if data, err := read("extra"); err != nil || string(data) != "hello" {
				t.Fatalf("read after a malformed reply: %q, %v", data, err)
			}
		})
	}
}
