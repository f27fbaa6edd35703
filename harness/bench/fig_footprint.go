package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/wren-vm/wren/harness/client"
)

// footprintRepeats is how many fresh agents each footprint figure samples.
const footprintRepeats = 3

// settle is how long an agent idles before it is sampled.
const settle = 3 * time.Second

// warmup is work done on a fresh agent before its idle footprint is read.
type warmup struct {
	name string
	fn   func(ctx context.Context, r *Runner, c *client.Client) error
}

// footprint starts footprintRepeats agents with env, runs warm on each,
// lets it idle and samples it; the samples land on fig under subject.
func (r *Runner) footprint(ctx context.Context, fig *Figure, bin, subject string, env []string, warm *warmup) ([]ProcSample, error) {
	var samples []ProcSample
	for i := 0; i < footprintRepeats; i++ {
		s, err := r.sampleOnce(ctx, bin, env, warm)
		if err != nil {
			return nil, err
		}
		samples = append(samples, s)
	}
	addFootprint(fig, subject, samples)
	return samples, nil
}

func (r *Runner) sampleOnce(ctx context.Context, bin string, env []string, warm *warmup) (ProcSample, error) {
	agent, err := StartAgent(ctx, bin, r.S.WorkDir, env)
	if err != nil {
		return ProcSample{}, err
	}
	defer func() { r.logCleanup("stop the agent", agent.Stop()) }()
	if warm != nil {
		c, err := agent.Dial(ctx)
		if err != nil {
			return ProcSample{}, err
		}
		err = warm.fn(ctx, r, c)
		c.Close()
		if err != nil {
			return ProcSample{}, fmt.Errorf("%s: %w", warm.name, err)
		}
	}
	select {
	case <-time.After(settle):
	case <-ctx.Done():
		return ProcSample{}, ctx.Err()
	}
	return agent.Sample()
}

func addFootprint(fig *Figure, subject string, samples []ProcSample) {
	pick := func(f func(ProcSample) int64) []float64 {
		out := make([]float64, len(samples))
		for i, s := range samples {
			out[i] = float64(f(s)) / 1024
		}
		return out
	}
	fig.Add(subject, "RssAnon", "MiB", pick(func(s ProcSample) int64 { return s.RssAnon }))
	fig.Add(subject, "RSS", "MiB", pick(func(s ProcSample) int64 { return s.RSS }))
	fig.Add(subject, "PSS", "MiB", pick(func(s ProcSample) int64 { return s.PSS }))
	fig.Add(subject, "threads", "", pick(func(s ProcSample) int64 { return s.Threads * 1024 }))
}

// checkBurst runs Check calls from several connections at once: the
// allocation burst every agent sees when a shim reconnects.
var checkBurst = &warmup{name: "Check burst", fn: func(ctx context.Context, r *Runner, c *client.Client) error {
	const conns, calls = 8, 2000
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := checkLoop(ctx, c.Health, calls, nil); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}}

func figIdle(ctx context.Context, r *Runner) *Figure {
	fig := &Figure{
		ID: "1", Title: "Agent idle footprint",
		Method: fmt.Sprintf("The agent binary started on a unix socket (as a host process, not PID 1), driven through the API, "+
			"left idle %s, then VmRSS/RssAnon from /proc/PID/status and Pss from /proc/PID/smaps_rollup. "+
			"Each row is %d fresh agents (median, spread across them).", settle, footprintRepeats),
		Goal:   "RssAnon ≤ 1.5 MiB; RSS ≤ 8 MiB",
		Anchor: "Kata Go agent ≈ 11 MB, Rust agent ≈ 1.1 MB (kata-containers#147, no method given)",
	}
	judged := "wren fresh"
	for _, v := range r.agents() {
		if _, err := r.footprint(ctx, fig, v.bin, v.subject+" fresh", nil, nil); err != nil {
			fig.Skip(v.subject+" fresh", err)
		}
		subject := v.subject + " after sandbox + 1 container"
		if _, err := r.footprint(ctx, fig, v.bin, subject, nil, sandboxOneContainer); err != nil {
			fig.Skip(subject, err)
		} else if v.bin == r.S.AgentBin {
			judged = subject
		}
		subject = v.subject + " after Check burst (8×2000)"
		if _, err := r.footprint(ctx, fig, v.bin, subject, nil, checkBurst); err != nil {
			fig.Skip(subject, err)
		}
	}
	anon, _ := fig.Metric(judged, "RssAnon")
	rss, _ := fig.Metric(judged, "RSS")
	fig.Judge(anon.Median <= 1.5 && rss.Median <= 8)
	fig.Judged = judged
	fig.Note("goal judged on %q", judged)
	return fig
}
