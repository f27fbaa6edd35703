package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/wren-vm/wren/protocols/agentpb"
)

// stdoutBudget bounds each stream of figure 7 so that `make bench` stays
// within 15 minutes when the agent is slow; the figure notes a cut short.
const stdoutBudget = 40 * time.Second

// throughput records the rate of each segment of a stream.
type throughput struct {
	segment  int64
	inSeg    int64
	total    int64
	segStart time.Time
	start    time.Time
	rates    []float64 // MB/s per segment
}

func newThroughput(total int64) *throughput {
	now := time.Now()
	return &throughput{segment: max(total/16, 4<<20), start: now, segStart: now}
}

func (t *throughput) add(n int) {
	t.total += int64(n)
	t.inSeg += int64(n)
	if t.inSeg >= t.segment {
		now := time.Now()
		t.rates = append(t.rates, float64(t.inSeg)/now.Sub(t.segStart).Seconds()/1e6)
		t.inSeg, t.segStart = 0, now
	}
}

func (t *throughput) overall() float64 { return float64(t.total) / time.Since(t.start).Seconds() / 1e6 }

func figStdout(ctx context.Context, r *Runner) *Figure {
	total := r.S.StdoutBytes
	fig := &Figure{
		ID: "7", Title: "Container stdout throughput",
		Method: fmt.Sprintf("A container runs busybox `dd if=/dev/zero bs=1M count=%d` (%d MiB to its stdout pipe); the "+
			"benchmark reads it with ReadStdout calls of a fixed Len (Kata's shim uses 32 KiB) until EOF, on one connection. "+
			"Raw peer: a separate process writes the same bytes in 1 MiB writes to a unix socket and the benchmark reads "+
			"them with the same buffer size. Rate per %d MiB segment (median and spread across segments); "+
			"the overall rate is in the notes. The agent's container pipes use the kernel default size (64 KiB) unless noted.",
			total>>20, total>>20, max(total/16, 4<<20)>>20),
		Goal:   "≥ 0.5× raw with 1 MiB reads",
		Anchor: "RPC-wrapped stdio over vsock 50–100 MB/s (CubeSandbox#728, no method); spike.md: 64 KiB ttrpc Put 145–201 MB/s here",
	}
	run := func(bin, subject string, readLen int, args []string) (Metric, error) {
		var m Metric
		err := r.withAgentPod(ctx, bin, nil, args, func(_ *AgentProc, p *pod) error {
			id := p.id("dd")
			spec := p.bundle.Spec("/bin/dd", "if=/dev/zero", "bs=1M", fmt.Sprintf("count=%d", total>>20))
			if err := p.start(ctx, id, spec); err != nil {
				return err
			}
			tp := newThroughput(total)
			req := &agentpb.ReadStreamRequest{ContainerId: id, ExecId: id, Len: uint32(readLen)}
			want := total >> 20 << 20
			budget := r.budget(stdoutBudget, 6*time.Minute, 10*time.Second)
			deadline := time.Now().Add(budget)
			for tp.total < want && time.Now().Before(deadline) {
				cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
				resp, err := p.c.Agent.ReadStdout(cctx, req)
				cancel()
				if err != nil {
					p.stop(ctx, id)
					return fmt.Errorf("ReadStdout: %w", err)
				}
				if len(resp.Data) == 0 {
					p.stop(ctx, id)
					return fmt.Errorf("ReadStdout reported EOF after %d of %d bytes while dd was still writing (stream truncated)", tp.total, want)
				}
				tp.add(len(resp.Data))
			}
			overall := tp.overall()
			if tp.total < want {
				fig.Note("%s: stopped after %d MiB: its %s budget ran out", subject, tp.total>>20, budget.Round(time.Second))
				if err := p.stop(ctx, id); err != nil {
					return err
				}
			} else {
				if _, err := p.wait(ctx, id, id); err != nil {
					return err
				}
				if err := p.remove(ctx, id); err != nil {
					return err
				}
			}
			m = fig.Add(subject, "throughput", "MB/s", tp.rates)
			fig.Metrics[len(fig.Metrics)-1].HigherIsBetter = true
			fig.Note("%s: %.1f MB/s overall", subject, overall)
			return nil
		})
		return m, err
	}
	raw := func(subject string, readLen int) (Metric, error) {
		h, err := StartHelper(r.S.WorkDir, CopyHelperArgs(total>>20<<20, 1<<20)...)
		if err != nil {
			return Metric{}, err
		}
		defer h.Stop()
		conn, err := net.Dial("unix", h.Path)
		if err != nil {
			return Metric{}, err
		}
		defer conn.Close()
		buf := make([]byte, readLen)
		tp := newThroughput(total)
		for {
			n, err := conn.Read(buf)
			tp.add(n)
			if err == io.EOF {
				break
			}
			if err != nil {
				return Metric{}, err
			}
		}
		overall := tp.overall()
		m := fig.Add(subject, "throughput", "MB/s", tp.rates)
		fig.Metrics[len(fig.Metrics)-1].HigherIsBetter = true
		fig.Note("%s: %.1f MB/s overall", subject, overall)
		return m, nil
	}
	type result struct {
		m   Metric
		err error
	}
	results := map[string]result{}
	type variant struct {
		subject string
		readLen int
		raw     bool
		bin     string
		args    []string
	}
	variants := []variant{
		{"raw socket, 32 KiB reads", 32 << 10, true, "", nil},
		{"raw socket, 1 MiB reads", 1 << 20, true, "", nil},
	}
	for _, a := range r.agents() {
		variants = append(variants,
			variant{a.subject + ", 32 KiB reads", 32 << 10, false, a.bin, nil},
			variant{a.subject + ", 1 MiB reads", 1 << 20, false, a.bin, nil})
	}
	variants = append(variants, variant{"wren, 1 MiB reads, 1 MiB pipes", 1 << 20, false, r.S.AgentBin, pipeConfig(r, 1<<20)})
	for _, v := range variants {
		var res result
		if v.raw {
			res.m, res.err = raw(v.subject, v.readLen)
		} else {
			res.m, res.err = run(v.bin, v.subject, v.readLen, v.args)
		}
		if res.err != nil {
			fig.Skip(v.subject, res.err)
		}
		results[v.subject] = res
		if ctx.Err() != nil {
			break
		}
	}
	ratio := func(name, num, den string, goal float64) {
		n, d := results[num], results[den]
		if n.err == nil && d.err == nil {
			fig.AddRatio(name, n.m, d.m, 0, goal)
		}
	}
	ratio("wren / raw, 1 MiB reads", "wren, 1 MiB reads", "raw socket, 1 MiB reads", 0.5)
	ratio("wren / raw, 32 KiB reads", "wren, 32 KiB reads", "raw socket, 32 KiB reads", 0)
	ratio("wren 1 MiB pipes / raw, 1 MiB reads", "wren, 1 MiB reads, 1 MiB pipes", "raw socket, 1 MiB reads", 0)
	ratio("wren / wren (before), 1 MiB reads", "wren, 1 MiB reads", "wren (before), 1 MiB reads", 0)
	ratio("wren / wren (before), 32 KiB reads", "wren, 32 KiB reads", "wren (before), 32 KiB reads", 0)
	return fig
}

// pipeConfig writes an agent config file that sets container_pipe_size
// and returns the agent arguments that load it.
func pipeConfig(r *Runner, size int) []string {
	path := filepath.Join(r.S.WorkDir, fmt.Sprintf("pipe-%d.toml", size))
	if err := os.WriteFile(path, []byte(fmt.Sprintf("container_pipe_size = %d\n", size)), 0o644); err != nil {
		return nil
	}
	return []string{"--config", path}
}
