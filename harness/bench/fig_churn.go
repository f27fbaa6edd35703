package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wren-vm/wren/protocols/agentpb"
)

// churnBudget bounds the exec phase of figure 8 so that `make bench` stays
// within its 15 minutes on a loaded machine; the figure says how many
// cycles fit.
const churnBudget = 4 * time.Minute

// churnAfterSettle is the idle time before the "after" sample. It exceeds
// the agent's UnreadOutputLinger (10 s, agent/container): nobody reads
// the execs' output here, and until the linger ends the agent rightly
// keeps the last execs' pipes, which would read as fd growth.
const churnAfterSettle = 12 * time.Second

func figChurn(ctx context.Context, r *Runner) *Figure {
	nc, ne := r.S.ChurnContainers, r.S.ChurnExecs
	fig := &Figure{
		ID: "8", Title: "Churn: sleeping containers, then exec+wait cycles",
		Method: fmt.Sprintf("One agent, one sandbox: %d sleeping containers started one after another, %s idle, "+
			"sample; then up to %d ExecProcess+WaitProcess cycles of /bin/true spread round-robin over the "+
			"containers (at most %s), sampled every 100 cycles (or each tenth); %s idle (past the agent's 10 s linger for unread exec output), sample. Meanwhile a second connection calls "+
			"Health.Check every 10 ms: its p99 is the agent's responsiveness under churn. Growth = after − before.",
			nc, settle, ne, churnBudget, churnAfterSettle),
		Goal:   "no growth beyond noise; Check p99 during churn ≤ 10 ms",
		Anchor: "Kata's Go agent ran out of fds near 1,000 execs (kata-containers/agent#762)",
	}
	err := r.withPod(ctx, nil, nil, func(a *AgentProc, p *pod) error {
		return measureChurn(ctx, r, fig, a, p)
	})
	if err != nil {
		return failed(fig, "wren", err)
	}
	return fig
}

// measureChurn starts the sleeping containers, samples the agent, runs the
// exec cycles under the Check prober, and samples it again.
func measureChurn(ctx context.Context, r *Runner, fig *Figure, a *AgentProc, p *pod) error {
	nc, ne := r.S.ChurnContainers, r.S.ChurnExecs
	var ids []string
	defer func() {
		for _, id := range ids {
			r.logCleanup("stop "+id, p.stop(context.WithoutCancel(ctx), id))
		}
	}()
	t0 := time.Now()
	ids, err := p.startSleepers(ctx, nc)
	if err != nil {
		return err
	}
	fig.Note("%d containers started in %.1f s", nc, time.Since(t0).Seconds())
	time.Sleep(settle)
	before, err := sampleChurn(ctx, a, p)
	if err != nil {
		return err
	}

	// Prober on its own connection.
	pc, err := a.Dial(ctx)
	if err != nil {
		return err
	}
	defer pc.Close()
	prober := startCheckProber(ctx, pc.Health)

	budget := r.budget(churnBudget, time.Minute, 30*time.Second)
	run, err := runChurnExecs(ctx, a, p, ids, ne, budget)
	prober.stop()
	if err != nil {
		return err
	}
	if prober.err != nil && ctx.Err() == nil && len(prober.probes) == 0 {
		return fmt.Errorf("calling Check during churn: %w", prober.err)
	}
	if run.done < ne {
		fig.Note("only %d of %d exec cycles fit in this run's exec budget (%s) on this machine", run.done, ne, budget.Round(time.Second))
	}
	time.Sleep(churnAfterSettle)
	after, err := sampleChurn(ctx, a, p)
	if err != nil {
		return err
	}
	noteGoMemoryMoved(fig, before.goMemory, after.goMemory)
	addChurnResults(fig, before, after, run, prober.probes, nc)
	return nil
}

// startSleepers starts n sleeping containers one after another. It returns
// the ids of those it started, on failure too, so that the caller stops them.
func (p *pod) startSleepers(ctx context.Context, n int) ([]string, error) {
	var ids []string
	for i := 0; i < n; i++ {
		id, err := p.startSleeper(ctx)
		if err != nil {
			return ids, fmt.Errorf("container %d: %w", i, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// churnSample is the agent's state on either side of the churn: its process
// figures and, from one metrics scrape, its goroutines and Go memory
// classes.
type churnSample struct {
	proc       ProcSample
	goroutines float64
	goMemory   map[string]float64
}

func sampleChurn(ctx context.Context, a *AgentProc, p *pod) (churnSample, error) {
	s, err := a.Sample()
	if err != nil {
		return churnSample{}, err
	}
	scrape := scrapeMetrics(ctx, p.c)
	return churnSample{proc: s, goroutines: goroutines(scrape), goMemory: goMemory(scrape)}, nil
}

// checkProber calls Health.Check every 10 ms until stopped: how responsive
// the agent stays under load.
type checkProber struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// probes and err are the prober's until stop returns.
	probes []time.Duration
	err    error
}

func startCheckProber(ctx context.Context, h agentpb.HealthService) *checkProber {
	probeCtx, stopProbe := context.WithCancel(ctx)
	cp := &checkProber{cancel: stopProbe}
	cp.wg.Add(1)
	go func() {
		defer cp.wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-probeCtx.Done():
				return
			case <-tick.C:
			}
			cp.probes, cp.err = checkLoop(probeCtx, h, 1, cp.probes)
			if cp.err != nil && probeCtx.Err() == nil {
				return
			}
		}
	}()
	return cp
}

// stop ends the probes and waits for the one in flight.
func (cp *checkProber) stop() {
	cp.cancel()
	cp.wg.Wait()
}

// churnRun is what the exec phase measured.
type churnRun struct {
	execs []time.Duration
	trend []ProcSample // the agent every step cycles
	step  int
	done  int // cycles run, fewer than asked when the budget ran out
}

// runChurnExecs runs up to n ExecProcess+WaitProcess cycles of /bin/true
// round-robin over the containers ids, for at most budget, sampling the
// agent every step cycles.
func runChurnExecs(ctx context.Context, a *AgentProc, p *pod, ids []string, n int, budget time.Duration) (churnRun, error) {
	var execs []time.Duration
	var trend []ProcSample
	deadline := time.Now().Add(budget)
	step := max(min(n/10, 100), 1)
	done := 0
	for ; done < n && time.Now().Before(deadline); done++ {
		d, err := p.execTrue(ctx, ids[done%len(ids)])
		if err != nil {
			return churnRun{}, fmt.Errorf("exec %d: %w", done, err)
		}
		execs = append(execs, d)
		if (done+1)%step == 0 {
			if s, err := a.Sample(); err == nil {
				trend = append(trend, s)
			}
		}
	}
	return churnRun{execs: execs, trend: trend, step: step, done: done}, nil
}

// noteGoMemoryMoved notes where the growth is, in the Go runtime's own
// terms, when the agent exports its memory classes.
func noteGoMemoryMoved(fig *Figure, memBefore, memAfter map[string]float64) {
	if memBefore == nil || memAfter == nil {
		return
	}
	var moved []string
	for class, after := range memAfter {
		if d := after - memBefore[class]; d >= 128<<10 || d <= -128<<10 {
			moved = append(moved, fmt.Sprintf("%s %+.2f MiB", class, d/(1<<20)))
		}
	}
	slices.Sort(moved)
	fig.Note("Go memory classes that moved by 128 KiB or more over the churn: %s", strings.Join(moved, ", "))
}

// addChurnResults adds the exec and Check latencies and the before/after
// rows, and judges growth and Check p99 against the goal.
func addChurnResults(fig *Figure, b, a churnSample, run churnRun, probes []time.Duration, nc int) {
	before, after := b.proc, a.proc
	fig.Add("wren", "exec+wait during churn", "ms", Millis(run.execs))
	pr := fig.Add("wren", "Check during churn", "ms", Millis(probes))
	for _, row := range []struct {
		name          string
		before, after float64
		unit          string
	}{
		{"RSS", float64(before.RSS) / 1024, float64(after.RSS) / 1024, "MiB"},
		{"RssAnon", float64(before.RssAnon) / 1024, float64(after.RssAnon) / 1024, "MiB"},
		{"threads", float64(before.Threads), float64(after.Threads), ""},
		{"fds", float64(before.FDs), float64(after.FDs), ""},
		{"goroutines", b.goroutines, a.goroutines, ""},
	} {
		if row.before < 0 || row.after < 0 {
			fig.Note("%s: the agent exports no goroutine count (GetMetrics has no *goroutines* metric)", row.name)
			continue
		}
		fig.AddValue("wren", row.name+" before", row.unit, row.before)
		fig.AddValue("wren", row.name+" after", row.unit, row.after)
	}
	var trendRSS []string
	for _, s := range run.trend {
		trendRSS = append(trendRSS, fmt.Sprintf("%d/%d/%d", s.RSS, s.Threads, s.FDs))
	}
	fig.Note("RSS KiB/threads/fds every %d execs: %v", run.step, trendRSS)
	fig.Note("%d exec cycles over %d containers; %d Check probes", run.done, nc, len(probes))
	fdGrowth := after.FDs - before.FDs
	thGrowth := after.Threads - before.Threads
	rssGrowth := float64(after.RSS-before.RSS) / 1024
	fig.Judge(pr.P99 <= 10 && fdGrowth <= 2 && thGrowth <= 2 && rssGrowth <= 2)
	fig.Note("growth: RSS %+.2f MiB, threads %+d, fds %+d (judged: RSS ≤ +2 MiB, threads and fds ≤ +2)", rssGrowth, thGrowth, fdGrowth)
}
