package reliability

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// nsKinds are the namespaces every thread of the agent must keep: the ones
// libcontainer and the sandbox's namespace set-up enter on locked threads.
var nsKinds = []string{"mnt", "uts", "ipc", "net", "pid", "cgroup"}

// TestAgentThreadsStayInAgentNamespaces runs many containers through the
// agent, then checks that every thread of the agent is still in the
// namespaces the agent started in. libcontainer joins a container's mount
// namespace on a locked thread and lets that thread die; had the locked
// goroutine run on the process's main thread, which can never exit, the
// main thread would stay in the container's mount namespace, and with it
// /proc/self/mountinfo and every path lookup the runtime serves from it.
func TestAgentThreadsStayInAgentNamespaces(t *testing.T) {
	p := newPod(t)
	// Several creates at once, as a pod's containers come: the agent's
	// goroutines then spread over more threads, the main one among them.
	const n, parallel = 48, 4
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := 0; w < parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += parallel {
				errs <- p.runToEnd(fmt.Sprintf("ns%d", i), p.spec("/bin/true"))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	pid := p.a.Cmd.Process.Pid
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	strays := 0
	for _, kind := range nsKinds {
		// The agent was started from this process and joined nothing of
		// its own before serving: its namespaces are the test's.
		want, err := os.Readlink("/proc/self/ns/" + kind)
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			got, err := os.Readlink(filepath.Join("/proc", fmt.Sprint(pid), "task", task.Name(), "ns", kind))
			if err != nil {
				continue // the thread exited meanwhile
			}
			if got != want {
				strays++
				t.Errorf("agent thread %s is in %s, the agent's is %s", task.Name(), got, want)
			}
		}
	}
	record(t, "confinement", fmt.Sprintf("agent threads outside the agent's namespaces after %d containers", n), strays)
}
