package reliability

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/harness/testagent"
	"github.com/wren-vm/wren/internal/testbundle"
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

// TestFaultForkBombSparesExecAndCreate: a fork bomb in a container whose
// spec sets no pids limit must not take the pod's last pids: while it
// runs, ExecProcess into another container and CreateContainer still
// work. The agent runs with a small sandbox ceiling (--sandbox-pids-max).
// Whatever the agent does, the bomb cannot run away on this machine: its
// container sits in the test's own pids cgroup (backstop, a little above
// the ceiling), and the bomb starts only once its init is seen there.
func TestFaultForkBombSparesExecAndCreate(t *testing.T) {
	const ceiling, backstop = 256, 256 + 64
	outer := fmt.Sprintf("wren-rel-bomb-%d-%d", os.Getpid(), seq.Add(1))
	outerDir := filepath.Join(pidsHierarchy(t), outer)
	if err := os.Mkdir(outerDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs last: after DestroySandbox and the
	// agent's exit, nothing may be left in the backstop.
	t.Cleanup(func() { killCgroup(t, outerDir); testbundle.RemoveCgroupParent(outer) })
	if err := os.WriteFile(filepath.Join(outerDir, "pids.max"), []byte(fmt.Sprint(backstop)), 0); err != nil {
		t.Fatal(err)
	}
	parent := outer + "/pod"
	p := newPodOpts(t, testagent.Options{Args: []string{"--cgroup-parent", parent, "--sandbox-pids-max", fmt.Sprint(ceiling)}}, nil)
	// Every container of this test sits below the backstop, whatever
	// the agent does with cgroup paths.
	spec := func(id string, args ...string) *specs.Spec {
		s := p.spec(args...)
		s.Linux.CgroupsPath = "/" + parent + "/" + id
		return s
	}
	p.run("sibling", spec("sibling", "/bin/sleep", "1000"))
	// The init starts the bomb and becomes a sleep that reaps nothing, so
	// the bomb's exited processes stay as zombies holding their pids: it
	// fills its cgroup and keeps it full without spinning.
	bomb := spec("bomb", "/bin/sh", "-c", `b(){ b|b& }; b & exec sleep 1000`)
	if bomb.Linux.Resources != nil && bomb.Linux.Resources.Pids != nil {
		t.Fatalf("the bomb's spec sets a pids limit: %v", bomb.Linux.Resources.Pids)
	}
	if err := p.create("bomb", bomb); err != nil {
		t.Fatalf("CreateContainer bomb: %v", err)
	}
	t.Cleanup(func() { _ = p.remove("bomb") })
	inBackstop(t, outerDir, "/"+parent+"/bomb")
	if _, err := p.c.Agent.StartContainer(ctx(t), &agentpb.StartContainerRequest{ContainerId: "bomb"}); err != nil {
		t.Fatalf("StartContainer bomb: %v", err)
	}
	reached := p.pidsSettled("bomb")
	if reached < ceiling/2 {
		t.Fatalf("the bomb reached only %d pids: it did not run into a limit", reached)
	}
	if reached > ceiling {
		t.Errorf("the bomb holds %d pids, above the sandbox ceiling %d", reached, ceiling)
	}
	if b, _ := os.ReadFile(filepath.Join(outerDir, "pod", "pids.max")); strings.TrimSpace(string(b)) != fmt.Sprint(ceiling) {
		t.Errorf("pids.max of the cgroup parent %q, want %d", b, ceiling)
	}
	record(t, "fault", "fork bomb without a pids limit: pids it reached (sandbox ceiling 256)", reached)

	execErr := p.tryExec("sibling", "/bin/echo", "alive")
	if execErr != nil {
		t.Errorf("ExecProcess into another container during the fork bomb: %v", execErr)
	}
	record(t, "fault", "fork bomb without a pids limit: ExecProcess into another container", status.Code(execErr))
	createErr := p.create("late", spec("late", "/bin/true"))
	if createErr == nil {
		if _, err := p.c.Agent.StartContainer(ctx(t), &agentpb.StartContainerRequest{ContainerId: "late"}); err != nil {
			createErr = fmt.Errorf("start: %w", err)
		} else if w, err := p.c.Agent.WaitProcess(ctx(t), &agentpb.WaitProcessRequest{ContainerId: "late", ExecId: "late"}); err != nil || w.Status != 0 {
			createErr = fmt.Errorf("wait: %v, %v", w, err)
		}
		if err := p.remove("late"); err != nil {
			t.Errorf("remove the late container: %v", err)
		}
	}
	if createErr != nil {
		t.Errorf("CreateContainer during the fork bomb: %v", createErr)
	}
	record(t, "fault", "fork bomb without a pids limit: CreateContainer and run", status.Code(createErr))

	if err := p.remove("bomb"); err != nil {
		t.Fatalf("remove the fork bomb: %v", err)
	}
	// Only the sibling's sleep may be left (tasks are released
	// asynchronously after their kill).
	var left string
	for deadline := time.Now().Add(10 * time.Second); left != "1" && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(filepath.Join(outerDir, "pod", "pids.current"))
		left = strings.TrimSpace(string(b))
	}
	if left != "1" {
		t.Errorf("pids.current of the cgroup parent after removing the bomb: %q, want 1", left)
	}
}

// tryExec runs args to completion in container id and returns what went
// wrong, if anything (a non-zero exit included).
func (p *pod) tryExec(id string, args ...string) error {
	execID := fmt.Sprintf("x%d", seq.Add(1))
	proc := ocispec.FromProcess(p.spec(args...).Process)
	if _, err := p.c.Agent.ExecProcess(ctx(p.t), &agentpb.ExecProcessRequest{ContainerId: id, ExecId: execID, Process: proc}); err != nil {
		return err
	}
	w, err := p.c.Agent.WaitProcess(ctx(p.t), &agentpb.WaitProcessRequest{ContainerId: id, ExecId: execID})
	if err != nil {
		return err
	}
	out := p.drain(p.c.Agent.ReadStdout, id, execID)
	p.drain(p.c.Agent.ReadStderr, id, execID)
	if w.Status != 0 || out != args[len(args)-1]+"\n" {
		return fmt.Errorf("exit status %d, output %q", w.Status, out)
	}
	return nil
}

// pidsSettled waits until container id's pids count stops growing (for a
// second) and returns it.
func (p *pod) pidsSettled(id string) uint64 {
	p.t.Helper()
	var last uint64
	steady := 0
	for deadline := time.Now().Add(60 * time.Second); steady < 10 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		st, err := p.c.Agent.StatsContainer(ctx(p.t), &agentpb.StatsContainerRequest{ContainerId: id})
		if err != nil {
			p.t.Fatalf("StatsContainer %s: %v", id, err)
		}
		cur := st.GetCgroupStats().GetPidsStats().GetCurrent()
		if cur > last {
			last, steady = cur, 0
		} else {
			steady++
		}
	}
	return last
}

// inBackstop checks that the created container whose pids cgroup is
// path holds exactly its init, and that the init's pids cgroup is that
// one, below backstop.
func inBackstop(t *testing.T, backstop, path string) {
	t.Helper()
	dir := filepath.Join(filepath.Dir(backstop), path)
	if !strings.HasPrefix(dir, backstop+"/") {
		t.Fatalf("%s is not below the backstop %s", dir, backstop)
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	pids := strings.Fields(string(b))
	if err != nil || len(pids) != 1 {
		t.Fatalf("cgroup.procs of %s: %q, %v; want the init alone", dir, b, err)
	}
	cg, err := os.ReadFile("/proc/" + pids[0] + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(cg), "\n") {
		// v1 "N:pids:/path", v2 "0::/path".
		if f := strings.SplitN(line, ":", 3); len(f) == 3 && (f[1] == "pids" || (f[0] == "0" && filepath.Dir(backstop) == "/sys/fs/cgroup")) {
			if f[2] != path {
				t.Fatalf("the init's pids cgroup is %s, want %s", f[2], path)
			}
			return
		}
	}
	t.Fatalf("no pids cgroup for the init in %q", cg)
}

// pidsHierarchy is where this machine's pids controller is mounted.
func pidsHierarchy(t *testing.T) string {
	t.Helper()
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup/pids", &st) == nil && st.Type == unix.CGROUP_SUPER_MAGIC {
		return "/sys/fs/cgroup/pids"
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.subtree_control"); err == nil && slices.Contains(strings.Fields(string(b)), "pids") {
		return "/sys/fs/cgroup"
	}
	t.Fatal("no pids controller for the test's backstop cgroup")
	return ""
}

// killCgroup SIGKILLs every task in dir and below until none is left.
func killCgroup(t *testing.T, dir string) {
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var pids []int
		_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.Name() == "cgroup.procs" {
				b, _ := os.ReadFile(path)
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil {
						pids = append(pids, pid)
					}
				}
			}
			return nil
		})
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("tasks left in %s: %v", dir, pids)
			return
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL) // it may be gone already
		}
	}
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
	if err := <-done; err != nil {
		t.Logf("the cancelled read: %v", err)
	}
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
		t.Cleanup(func() { _ = unix.Unmount(a.StateRoot, unix.MNT_DETACH) })
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
