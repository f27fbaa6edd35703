package reliability

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/wren-vm/wren/protocols/agentpb"
)

// statusKB reads a "Name:   N kB" field of /proc/PID/status.
func statusKB(pid int, field string) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field+":" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return -1
}

// TestFaultMemoryPressure runs the agent with GOMEMLIMIT=64MiB and pushes
// 400 MiB of CopyFile payloads through it from 4 clients at once: it keeps
// answering and every copy lands. The peak RSS is recorded, not asserted.
func TestFaultMemoryPressure(t *testing.T) {
	const limitMiB = 64
	t.Setenv("GOMEMLIMIT", fmt.Sprintf("%dMiB", limitMiB))
	p := newPod(t)
	pid := p.a.Cmd.Process.Pid
	data := make([]byte, 2<<20)
	for i := range data {
		data[i] = byte(i)
	}
	const clients, perClient = 4, 50
	var wg sync.WaitGroup
	errs := make(chan error, clients*perClient)
	for c := 0; c < clients; c++ {
		cl := p.a.Dial(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perClient; i++ {
				_, err := cl.Agent.CopyFile(ctx(t), &agentpb.CopyFileRequest{
					Path: fmt.Sprintf("%s/shared/containers/mem-%d", p.a.StateRoot, c), FileSize: int64(len(data)), FileMode: 0o644, Data: data,
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("CopyFile under memory pressure: %v", err)
	}
	if _, err := p.c.Health.Check(ctx(t), &agentpb.CheckRequest{}); err != nil {
		t.Fatalf("Check after the pressure: %v", err)
	}
	hwm := statusKB(pid, "VmHWM")
	record(t, "fault", fmt.Sprintf("memory pressure: %d MiB CopyFile through an agent with GOMEMLIMIT=%dMiB, peak RSS MiB", clients*perClient*2, limitMiB), hwm/1024)
}
