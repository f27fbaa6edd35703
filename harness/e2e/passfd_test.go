package e2e

import (
	"io"
	"net"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/harness/vm"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// passfdPort is where the pod VM's agent takes passfd streams (Kata's
// default; harness/vm sets agent.passfd_listener_port to it).
const passfdPort = vm.PassfdPort

// passfdStream connects one stream to the agent's passfd port through the
// hybrid vsock, as a shim does, and returns it with the port the guest
// sees it come from.
func (p *pod) passfdStream(t *testing.T) (net.Conn, uint32) {
	t.Helper()
	ctx, cancel := p.ctx()
	defer cancel()
	conn, port, err := client.DialHybridVsockPort(ctx, p.vm.HybridVsock(), passfdPort)
	if err != nil {
		t.Fatal(err)
	}
	if port == 0 {
		t.Fatal("the hybrid vsock answered without a host port")
	}
	t.Cleanup(func() { conn.Close() })
	return conn, port
}

// testPassfd runs a container and an exec whose streams are host
// connections (Kata's passfd IO): the process writes its output to them
// and reads its input from them directly, with no ReadStdout or WriteStdin.
func (p *pod) testPassfd(t *testing.T) {
	out, outPort := p.passfdStream(t)
	errc, errPort := p.passfdStream(t)
	c := p.newContainer(t, "passfd", "/bin/sh", "-c", "echo hello through passfd; echo oops >&2")
	req := c.request()
	req.StdoutPort, req.StderrPort = outPort, errPort
	ctx, cancel := p.ctx()
	defer cancel()
	if _, err := p.c.Agent.CreateContainer(ctx, req); err != nil {
		t.Fatalf("CreateContainer with passfd streams: %v", err)
	}
	defer func() {
		if _, err := p.c.Agent.RemoveContainer(ctx, &agentpb.RemoveContainerRequest{ContainerId: c.id, Timeout: 30}); err != nil {
			t.Errorf("RemoveContainer: %v", err)
		}
	}()
	if _, err := p.c.Agent.StartContainer(ctx, &agentpb.StartContainerRequest{ContainerId: c.id}); err != nil {
		t.Fatal(err)
	}
	gotOut, gotErr := readAllAsync(out), readAllAsync(errc)
	if w, err := p.c.Agent.WaitProcess(ctx, &agentpb.WaitProcessRequest{ContainerId: c.id, ExecId: c.id}); err != nil || w.Status != 0 {
		t.Fatalf("WaitProcess: %v %v", w, err)
	}
	if o, e := <-gotOut, <-gotErr; o != "hello through passfd\n" || e != "oops\n" {
		t.Errorf("passfd stdout %q, stderr %q", o, e)
	}

	// An exec that reads its stdin from a host connection.
	p.startIdle(t, "passfdexec")
	in, inPort := p.passfdStream(t)
	echo, echoPort := p.passfdStream(t)
	proc := ocispec.FromProcess(&specs.Process{Args: []string{"/bin/head", "-c", "5"}, Env: []string{"PATH=/bin"}, Cwd: "/"})
	if _, err := p.c.Agent.ExecProcess(ctx, &agentpb.ExecProcessRequest{ContainerId: "passfdexec", ExecId: "head", Process: proc, StdinPort: inPort, StdoutPort: echoPort}); err != nil {
		t.Fatalf("ExecProcess with passfd streams: %v", err)
	}
	if _, err := in.Write([]byte("abcdefgh")); err != nil {
		t.Fatal(err)
	}
	got := readAllAsync(echo)
	if _, err := p.c.Agent.WaitProcess(ctx, &agentpb.WaitProcessRequest{ContainerId: "passfdexec", ExecId: "head"}); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "abcde" {
		t.Errorf("the exec echoed %q from its passfd stdin", s)
	}
}

// readAllAsync reads c to EOF (the guest closes it when the process is
// done with it).
func readAllAsync(c net.Conn) <-chan string {
	ch := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(c)
		ch <- string(b)
	}()
	return ch
}
