package bench

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
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
		var ids []string
		defer func() {
			for _, id := range ids {
				p.stop(context.WithoutCancel(ctx), id)
			}
		}()
		t0 := time.Now()
		for i := 0; i < nc; i++ {
			id, err := p.startSleeper(ctx)
			if err != nil {
				return fmt.Errorf("container %d: %w", i, err)
			}
			ids = append(ids, id)
		}
		fig.Note("%d containers started in %.1f s", nc, time.Since(t0).Seconds())
		time.Sleep(settle)
		before, err := a.Sample()
		if err != nil {
			return err
		}
		scrape := scrapeMetrics(ctx, p.c)
		gBefore, memBefore := goroutines(scrape), goMemory(scrape)

		// Prober on its own connection.
		pc, err := a.Dial(ctx)
		if err != nil {
			return err
		}
		defer pc.Close()
		probeCtx, stopProbe := context.WithCancel(ctx)
		var probes []time.Duration
		var probeErr error
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-probeCtx.Done():
					return
				case <-tick.C:
				}
				probes, probeErr = checkLoop(probeCtx, pc.Health, 1, probes)
				if probeErr != nil && probeCtx.Err() == nil {
					return
				}
			}
		}()

		var execs []time.Duration
		var trend []ProcSample
		budget := r.budget(churnBudget, time.Minute, 30*time.Second)
		deadline := time.Now().Add(budget)
		step := max(min(ne/10, 100), 1)
		done := 0
		for ; done < ne && time.Now().Before(deadline); done++ {
			d, err := p.execTrue(ctx, ids[done%len(ids)])
			if err != nil {
				stopProbe()
				wg.Wait()
				return fmt.Errorf("exec %d: %w", done, err)
			}
			execs = append(execs, d)
			if (done+1)%step == 0 {
				if s, err := a.Sample(); err == nil {
					trend = append(trend, s)
				}
			}
		}
		stopProbe()
		wg.Wait()
		if probeErr != nil && ctx.Err() == nil && len(probes) == 0 {
			return fmt.Errorf("Check during churn: %w", probeErr)
		}
		if done < ne {
			fig.Note("only %d of %d exec cycles fit in this run's exec budget (%s) on this machine", done, ne, budget.Round(time.Second))
		}
		time.Sleep(churnAfterSettle)
		after, err := a.Sample()
		if err != nil {
			return err
		}
		scrape = scrapeMetrics(ctx, p.c)
		gAfter := goroutines(scrape)
		if memAfter := goMemory(scrape); memBefore != nil && memAfter != nil {
			// Where the growth is, in the Go runtime's own terms.
			var moved []string
			for class, after := range memAfter {
				if d := after - memBefore[class]; d >= 128<<10 || d <= -128<<10 {
					moved = append(moved, fmt.Sprintf("%s %+.2f MiB", class, d/(1<<20)))
				}
			}
			slices.Sort(moved)
			fig.Note("Go memory classes that moved by 128 KiB or more over the churn: %s", strings.Join(moved, ", "))
		}

		fig.Add("wren", "exec+wait during churn", "ms", Millis(execs))
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
			{"goroutines", gBefore, gAfter, ""},
		} {
			if row.before < 0 || row.after < 0 {
				fig.Note("%s: the agent exports no goroutine count (GetMetrics has no *goroutines* metric)", row.name)
				continue
			}
			fig.AddValue("wren", row.name+" before", row.unit, row.before)
			fig.AddValue("wren", row.name+" after", row.unit, row.after)
		}
		var trendRSS []string
		for _, s := range trend {
			trendRSS = append(trendRSS, fmt.Sprintf("%d/%d/%d", s.RSS, s.Threads, s.FDs))
		}
		fig.Note("RSS KiB/threads/fds every %d execs: %v", step, trendRSS)
		fig.Note("%d exec cycles over %d containers; %d Check probes", done, nc, len(probes))
		fdGrowth := after.FDs - before.FDs
		thGrowth := after.Threads - before.Threads
		rssGrowth := float64(after.RSS-before.RSS) / 1024
		fig.Judge(pr.P99 <= 10 && fdGrowth <= 2 && thGrowth <= 2 && rssGrowth <= 2)
		fig.Note("growth: RSS %+.2f MiB, threads %+d, fds %+d (judged: RSS ≤ +2 MiB, threads and fds ≤ +2)", rssGrowth, thGrowth, fdGrowth)
		return nil
	})
	if err != nil {
		return failed(fig, "wren", err)
	}
	return fig
}
