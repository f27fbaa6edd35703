package reliability

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// TestLeaksExecAndContainerCycles runs exec+wait and container
// create/start/remove cycles and checks that the agent's fds, threads,
// children, zombies, mounts and cgroups return to the baseline. (The full
// 10,000/500 counts belong to make bench.)
func TestLeaksExecAndContainerCycles(t *testing.T) {
	const execs, containers = 100, 20
	p := newPod(t)
	p.run("svc", p.spec("/bin/sleep", "1000"))
	p.exec("svc", "/bin/true")
	base := p.usage()
	for i := 0; i < execs; i++ {
		if out, code := p.exec("svc", "/bin/echo", "x"); code != 0 || out != "x\n" {
			t.Fatalf("exec %d: %q, %d", i, out, code)
		}
	}
	after := p.settle(base)
	record(t, "leak", fmt.Sprintf("after %d exec+wait", execs), after.String()+" (baseline "+base.String()+")")
	p.checkBaseline("exec cycles", base)

	for i := 0; i < containers; i++ {
		id := fmt.Sprintf("cycle%d", i)
		p.run(id, p.spec("/bin/true"))
		if _, err := p.c.Agent.WaitProcess(ctx(t), &agentpb.WaitProcessRequest{ContainerId: id, ExecId: id}); err != nil {
			t.Fatalf("wait %s: %v", id, err)
		}
		if err := p.remove(id); err != nil {
			t.Fatalf("remove %s: %v", id, err)
		}
	}
	after = p.settle(base)
	record(t, "leak", fmt.Sprintf("after %d container create/start/remove", containers), after.String()+" (baseline "+base.String()+")")
	p.checkBaseline("container cycles", base)

	// Known issue, measured, not asserted: a process whose stderr nobody
	// reads to EOF keeps its stdio pipes in the agent after WaitProcess.
	const undrained = 10
	before := p.settle(base)
	for i := 0; i < undrained; i++ {
		execID := fmt.Sprintf("nodrain%d", i)
		proc := ocispec.FromProcess(p.spec("/bin/true").Process)
		if _, err := p.c.Agent.ExecProcess(ctx(t), &agentpb.ExecProcessRequest{ContainerId: "svc", ExecId: execID, Process: proc}); err != nil {
			t.Fatal(err)
		}
		if _, err := p.c.Agent.WaitProcess(ctx(t), &agentpb.WaitProcessRequest{ContainerId: "svc", ExecId: execID}); err != nil {
			t.Fatal(err)
		}
	}
	grown := p.settle(before)
	record(t, "leak", fmt.Sprintf("agent fds added by %d exec+wait with stdout and stderr never read", undrained), grown.fds-before.fds)
}

// TestIdleConnectionsAndBadFrames opens 2000 idle connections, sends half
// frames, oversized frames and garbage, and checks the agent still answers
// and its fds return to the baseline once the clients go away.
func TestIdleConnectionsAndBadFrames(t *testing.T) {
	p := newPod(t)
	base := p.usage()
	sock := strings.TrimPrefix(p.a.Addr, "unix://")
	const idle = 2000
	conns := make([]net.Conn, 0, idle)
	for i := 0; i < idle; i++ {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	start := time.Now()
	if _, err := p.c.Health.Check(ctx(t), &agentpb.CheckRequest{}); err != nil {
		t.Fatalf("Check with %d idle connections: %v", idle, err)
	}
	record(t, "fault", fmt.Sprintf("Check latency with %d idle connections", idle), time.Since(start).Round(time.Microsecond))
	peak := p.usage()
	record(t, "leak", fmt.Sprintf("agent fds with %d idle connections", idle), peak.fds)
	for _, c := range conns {
		c.Close()
	}

	frame := func(length uint32, body []byte) []byte {
		// ttrpc header: length, stream id, type (1 = request), flags.
		h := make([]byte, 10)
		binary.BigEndian.PutUint32(h[0:4], length)
		binary.BigEndian.PutUint32(h[4:8], 1)
		h[8] = 1
		return append(h, body...)
	}
	bad := map[string][]byte{
		"half header":          {0, 0, 0, 10, 0},
		"half frame":           frame(100, []byte("only part")),
		"oversized frame 64MB": frame(64<<20, []byte("x")),
		"garbage body":         frame(16, []byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")),
		"unknown type":         append([]byte{0, 0, 0, 0, 0, 0, 0, 3, 0x7f, 0}, nil...),
	}
	for name, b := range bad {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		// The agent may drop the connection at any point: only its
		// answer to the Check below counts.
		_, _ = c.Write(b)
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, _ = c.Read(make([]byte, 64))
		c.Close()
		if _, err := p.c.Health.Check(ctx(t), &agentpb.CheckRequest{}); err != nil {
			t.Fatalf("Check after %s: %v", name, err)
		}
		record(t, "badinput", "ttrpc "+name, "agent answers")
	}
	p.checkBaseline("idle connections and bad frames", base)
}
