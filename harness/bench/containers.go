package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// rpcTimeout bounds every single container RPC of the benchmark.
const rpcTimeout = 60 * time.Second

// pod drives one sandbox of an agent through the API.
type pod struct {
	c      *client.Client
	bundle *Bundle
	seq    atomic.Int64
}

func newPod(ctx context.Context, r *Runner, c *client.Client) (*pod, error) {
	b, err := r.sharedBundle()
	if err != nil {
		return nil, err
	}
	p := &pod{c: c, bundle: b}
	cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	_, err = c.Agent.CreateSandbox(cctx, &agentpb.CreateSandboxRequest{Hostname: "bench", SandboxId: "bench"})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return nil, fmt.Errorf("CreateSandbox: %w", err)
	}
	return p, nil
}

func (p *pod) id(kind string) string { return fmt.Sprintf("%s%d", kind, p.seq.Add(1)) }

// create and start a container running args.
func (p *pod) start(ctx context.Context, id string, spec *specs.Spec) error {
	return p.startRequest(ctx, containerRequest(id, spec))
}

// containerRequest is the plain CreateContainer request for spec.
func containerRequest(id string, spec *specs.Spec) *agentpb.CreateContainerRequest {
	return &agentpb.CreateContainerRequest{ContainerId: id, ExecId: id, OCI: ocispec.FromSpec(spec)}
}

// startRequest sends req, then starts the container it created.
func (p *pod) startRequest(ctx context.Context, req *agentpb.CreateContainerRequest) error {
	cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	if _, err := p.c.Agent.CreateContainer(cctx, req); err != nil {
		return fmt.Errorf("CreateContainer: %w", err)
	}
	if _, err := p.c.Agent.StartContainer(cctx, &agentpb.StartContainerRequest{ContainerId: req.ContainerId}); err != nil {
		_ = p.remove(ctx, req.ContainerId) // best effort: the StartContainer error is the one to report
		return fmt.Errorf("StartContainer: %w", err)
	}
	return nil
}

func (p *pod) wait(ctx context.Context, id, execID string) (int32, error) {
	cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := p.c.Agent.WaitProcess(cctx, &agentpb.WaitProcessRequest{ContainerId: id, ExecId: execID})
	if err != nil {
		return 0, fmt.Errorf("WaitProcess: %w", err)
	}
	return resp.Status, nil
}

func (p *pod) remove(ctx context.Context, id string) error {
	cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	if _, err := p.c.Agent.RemoveContainer(cctx, &agentpb.RemoveContainerRequest{ContainerId: id}); err != nil {
		return fmt.Errorf("RemoveContainer: %w", err)
	}
	return nil
}

// runTrue is create+start+wait+remove of /bin/true.
func (p *pod) runTrue(ctx context.Context) (time.Duration, error) {
	id := p.id("true")
	return p.runToEnd(ctx, containerRequest(id, p.bundle.Spec("/bin/true")))
}

// runToEnd times create+start+wait+remove of the /bin/true container
// req describes.
func (p *pod) runToEnd(ctx context.Context, req *agentpb.CreateContainerRequest) (time.Duration, error) {
	id := req.ContainerId
	t0 := time.Now()
	if err := p.startRequest(ctx, req); err != nil {
		return 0, err
	}
	code, err := p.wait(ctx, id, id)
	if err != nil {
		_ = p.remove(ctx, id) // best effort: the wait's error is the one to report
		return 0, err
	}
	if err := p.remove(ctx, id); err != nil {
		return 0, err
	}
	d := time.Since(t0)
	if code != 0 {
		return d, fmt.Errorf("/bin/true exited %d", code)
	}
	return d, nil
}

// startSleeper starts a container that sleeps until it is killed.
func (p *pod) startSleeper(ctx context.Context) (string, error) {
	id := p.id("sleep")
	return id, p.start(ctx, id, p.bundle.Spec("/bin/sleep", "1000000"))
}

// stop kills a container's init, waits for it and removes the container.
func (p *pod) stop(ctx context.Context, id string) error {
	cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	if _, err := p.c.Agent.SignalProcess(cctx, &agentpb.SignalProcessRequest{ContainerId: id, ExecId: id, Signal: uint32(syscall.SIGKILL)}); err != nil {
		return fmt.Errorf("SignalProcess: %w", err)
	}
	if _, err := p.wait(ctx, id, id); err != nil {
		return err
	}
	return p.remove(ctx, id)
}

// execTrue is ExecProcess+WaitProcess of /bin/true in container id.
func (p *pod) execTrue(ctx context.Context, id string) (time.Duration, error) {
	execID := p.id("exec")
	proc := ocispec.FromProcess(p.bundle.Spec("/bin/true").Process)
	t0 := time.Now()
	cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	if _, err := p.c.Agent.ExecProcess(cctx, &agentpb.ExecProcessRequest{ContainerId: id, ExecId: execID, Process: proc}); err != nil {
		return 0, fmt.Errorf("ExecProcess: %w", err)
	}
	code, err := p.wait(ctx, id, execID)
	if err != nil {
		return 0, err
	}
	d := time.Since(t0)
	if code != 0 {
		return d, fmt.Errorf("exec /bin/true exited %d", code)
	}
	return d, nil
}

// sandboxOneContainer is CreateSandbox, then one /bin/true container run
// to completion and removed.
var sandboxOneContainer = &warmup{name: "CreateSandbox + one container", fn: func(ctx context.Context, r *Runner, c *client.Client) error {
	p, err := newPod(ctx, r, c)
	if err != nil {
		return err
	}
	_, err = p.runTrue(ctx)
	return err
}}

// scrapeMetrics returns the agent's GetMetrics text ("" when it fails):
// one call serves both readings below, so neither counts the other's
// allocations.
func scrapeMetrics(ctx context.Context, c *client.Client) string {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := c.Agent.GetMetrics(cctx, &agentpb.GetMetricsRequest{})
	if err != nil {
		return ""
	}
	return m.GetMetrics()
}

// goroutines reads the agent's goroutine count from a scrape; -1 when it
// exports none.
func goroutines(metrics string) float64 {
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "#") || !strings.Contains(line, "goroutines") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			return v
		}
	}
	return -1
}

// goMemory reads the agent's Go runtime memory classes from a scrape
// (kata_agent_go_memory_bytes{class="..."}), by class; nil when it
// exports none.
func goMemory(metrics string) map[string]float64 {
	const prefix = `kata_agent_go_memory_bytes{class="`
	var out map[string]float64
	for _, line := range strings.Split(metrics, "\n") {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		class, value, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			if out == nil {
				out = map[string]float64{}
			}
			out[class] = v
		}
	}
	return out
}

var containerFigures = []struct {
	id string
	fn figureFunc
}{
	{"2", figPerUnit},
	{"5", figLifecycle},
	{"6", figExec},
	{"7", figStdout},
	{"8", figChurn},
}

// exec starts a process in container id and does not wait for it.
func (p *pod) exec(ctx context.Context, id, execID string, proc *specs.Process) error {
	cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	if _, err := p.c.Agent.ExecProcess(cctx, &agentpb.ExecProcessRequest{ContainerId: id, ExecId: execID, Process: ocispec.FromProcess(proc)}); err != nil {
		return fmt.Errorf("ExecProcess: %w", err)
	}
	return nil
}
