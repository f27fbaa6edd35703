package reliability

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/harness/testagent"
	"github.com/wren-vm/wren/protocols/agentpb"
)

func int64p(v int64) *int64 { return &v }

// checkLatencies calls Health.Check n times and returns the sorted
// latencies; every call must succeed.
func (p *pod) checkLatencies(n int) []time.Duration {
	p.t.Helper()
	var out []time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		if _, err := p.c.Health.Check(ctx(p.t), &agentpb.CheckRequest{}); err != nil {
			p.t.Fatalf("Check %d: %v", i, err)
		}
		out = append(out, time.Since(start))
	}
	slices.Sort(out)
	return out
}

// TestFaultOOM: a container exceeding its memory limit is OOM-killed, the
// agent reports the event and keeps serving.
func TestFaultOOM(t *testing.T) {
	p := newPod(t)
	s := p.spec("/bin/sh", "-c", "head -c 200000000 /dev/zero | tail > /dev/null")
	s.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: int64p(16 << 20), Swap: int64p(16 << 20)}}
	p.run("oom", s)
	ev, err := p.c.Agent.GetOOMEvent(ctx(t), &agentpb.GetOOMEventRequest{})
	if err != nil || ev.ContainerId != "oom" {
		t.Fatalf("GetOOMEvent: %v, %v", ev, err)
	}
	w, err := p.c.Agent.WaitProcess(ctx(t), &agentpb.WaitProcessRequest{ContainerId: "oom", ExecId: "oom"})
	if err != nil {
		t.Fatal(err)
	}
	lat := p.checkLatencies(20)
	record(t, "fault", "container OOM: exit status of init", w.Status)
	record(t, "fault", "container OOM: Check max latency after", lat[len(lat)-1].Round(time.Microsecond))
	if err := p.remove("oom"); err != nil {
		t.Fatal(err)
	}
}

// TestFaultForkBomb: a fork bomb in a container with a pids limit is held
// at the limit, and Health.Check keeps answering (latency recorded).
func TestFaultForkBomb(t *testing.T) {
	p := newPod(t)
	base := p.warmBaseline()
	const limit = 64
	s := p.spec("/bin/sh", "-c", "b(){ b | b & }; b; sleep 1000")
	s.Linux.Resources = &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: int64p(limit)}}
	p.run("bomb", s)
	time.Sleep(2 * time.Second) // let it hit the limit
	lat := p.checkLatencies(50)
	st, err := p.c.Agent.StatsContainer(ctx(t), &agentpb.StatsContainerRequest{ContainerId: "bomb"})
	if err != nil {
		t.Fatalf("StatsContainer: %v", err)
	}
	cur := st.GetCgroupStats().GetPidsStats().GetCurrent()
	if cur > limit || cur < limit/2 {
		t.Errorf("pids.current %d with limit %d: the bomb did not run into the limit, or passed it", cur, limit)
	}
	record(t, "fault", "fork bomb: pids in container (limit 64)", cur)
	record(t, "fault", "fork bomb: Check p50 latency", lat[len(lat)/2].Round(time.Microsecond))
	record(t, "fault", "fork bomb: Check max latency", lat[len(lat)-1].Round(time.Microsecond))
	if err := p.remove("bomb"); err != nil {
		t.Fatalf("remove the fork bomb: %v", err)
	}
	p.checkBaseline("after removing the fork bomb", base)
}

// TestFaultKillInitWhileExecsRun: SIGKILL of a container's init ends its
// execs too (they share its pid namespace); every wait returns and the
// agent keeps serving.
func TestFaultKillInitWhileExecsRun(t *testing.T) {
	p := newPod(t)
	base := p.warmBaseline()
	p.run("victim", p.spec("/bin/sleep", "1000"))
	for i := 0; i < 3; i++ {
		proc := ocispec.FromProcess(p.spec("/bin/sleep", "1000").Process)
		if _, err := p.c.Agent.ExecProcess(ctx(t), &agentpb.ExecProcessRequest{ContainerId: "victim", ExecId: fmt.Sprint("e", i), Process: proc}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.c.Agent.SignalProcess(ctx(t), &agentpb.SignalProcessRequest{ContainerId: "victim", ExecId: "victim", Signal: uint32(unix.SIGKILL)}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"victim", "e0", "e1", "e2"} {
		w, err := p.c.Agent.WaitProcess(ctx(t), &agentpb.WaitProcessRequest{ContainerId: "victim", ExecId: id})
		if err != nil {
			t.Fatalf("wait %s: %v", id, err)
		}
		if w.Status != 128+9 {
			t.Errorf("%s: status %d, want 137", id, w.Status)
		}
	}
	record(t, "fault", "SIGKILL of init with 3 execs: waits returned", 4)
	if err := p.remove("victim"); err != nil {
		t.Fatal(err)
	}
	p.checkBaseline("after the kill", base)
}

// TestFaultDisconnectMidRead: a client that goes away during ReadStdout
// loses nothing: a new connection reads all the output.
func TestFaultDisconnectMidRead(t *testing.T) {
	p := newPod(t)
	p.run("talker", p.spec("/bin/sh", "-c", "sleep 1; echo first; echo second; sleep 1000"))
	c1 := p.a.Dial(t)
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c1.Agent.ReadStdout(rctx, &agentpb.ReadStreamRequest{ContainerId: "talker", ExecId: "talker", Len: 1024})
		done <- err
	}()
	time.Sleep(200 * time.Millisecond) // the read is pending in the agent
	c1.Close()
	cancel()
	<-done
	c2 := p.a.Dial(t)
	var got string
	for !strings.Contains(got, "second") {
		r, err := c2.Agent.ReadStdout(ctx(t), &agentpb.ReadStreamRequest{ContainerId: "talker", ExecId: "talker", Len: 1024})
		if err != nil || len(r.Data) == 0 {
			t.Fatalf("read after reconnect: %q so far, %v", got, err)
		}
		got += string(r.Data)
	}
	if got != "first\nsecond\n" {
		t.Errorf("output after reconnect %q, want both lines", got)
	}
	record(t, "fault", "client disconnect mid-ReadStdout: bytes lost", len("first\nsecond\n")-len(got))
}

// TestFaultFullStateRoot: with the state root on a full 2 MiB tmpfs,
// CreateContainer fails with a clear error and leaves nothing; once space
// is back it works.
func TestFaultFullStateRoot(t *testing.T) {
	p := newPodWith(t, func(a *testagent.Agent) {
		if err := os.MkdirAll(a.StateRoot, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("tmpfs", a.StateRoot, "tmpfs", 0, "size=2m"); err != nil {
			t.Fatal(err)
		}
		// Registered before newPod's DestroySandbox cleanup, so it runs
		// after it.
		t.Cleanup(func() { unix.Unmount(a.StateRoot, unix.MNT_DETACH) })
	})
	fill := filepath.Join(p.a.StateRoot, "fill")
	f, err := os.Create(fill)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Close()
	// A config.json larger than what is left.
	s := p.spec("/bin/true")
	s.Annotations = map[string]string{"pad": strings.Repeat("x", 256<<10)}
	err = p.create("full", s)
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "no space left") {
		t.Errorf("create on a full state root: %v, want Internal naming ENOSPC", err)
	}
	record(t, "fault", "full state root: CreateContainer code", status.Code(err))
	entries, _ := os.ReadDir(p.a.StateRoot)
	for _, e := range entries {
		if e.Name() == "full" {
			t.Errorf("bundle of the failed create left in the state root")
		}
	}
	if u := p.usage(); u.mounts > 1+2 || u.cgroups != 0 || u.children != 0 {
		t.Errorf("after the failed create the agent holds %v", u)
	}
	os.Remove(fill)
	if err := p.create("full", s); err != nil {
		t.Fatalf("create after freeing space: %v", err)
	}
	if err := p.remove("full"); err != nil {
		t.Fatal(err)
	}
}
