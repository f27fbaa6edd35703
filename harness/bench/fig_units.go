package bench

import (
	"context"
	"fmt"
	"time"
)

// unitBatches is how many batches figure 2 adds; each batch gives one
// per-unit sample.
const unitBatches = 5

func figPerUnit(ctx context.Context, r *Runner) *Figure {
	per := max(r.S.FootprintExecs/unitBatches, 1)
	fig := &Figure{
		ID: "2", Title: "Footprint per idle exec session and per running container",
		Method: fmt.Sprintf("One agent with a sandbox. Containers: %d batches of %d sleeping containers; after each batch "+
			"and %s idle, the agent's /proc figures; per-container cost = growth over the batch / batch size. "+
			"Exec sessions: then, in one of those containers, %d batches of %d `sleep` processes started with ExecProcess "+
			"and left running (stdio pipes open, nobody waiting), measured the same way. Only the agent process is "+
			"measured, not the containers' own processes.", unitBatches, per, settle, unitBatches, per),
		Goal: "≤ 64 KiB per exec; threads flat",
	}
	err := r.withPod(ctx, nil, nil, func(a *AgentProc, p *pod) error {
		return measurePerUnit(ctx, fig, a, p, per)
	})
	if err != nil {
		return failed(fig, "wren", err)
	}
	if m, ok := fig.Metric("wren per exec session", "RssAnon per unit"); ok {
		t, _ := fig.Metric("wren per exec session", "threads per unit")
		fig.Judge(m.Median <= 64 && t.Median < 0.5)
		fig.Judged = "wren per exec session"
	}
	return fig
}

// measurePerUnit adds sleeping containers, then idle exec sessions into the
// first of them, in batches of per, and records the agent's growth per unit.
func measurePerUnit(ctx context.Context, fig *Figure, a *AgentProc, p *pod, per int) error {
	sample := func() (ProcSample, error) { return settledSample(ctx, a) }
	var ids []string
	defer func() {
		for _, id := range ids {
			_ = p.stop(context.WithoutCancel(ctx), id) // best effort: the agent's stop after the figure takes what is left
		}
	}()
	if err := growPerUnit(fig, "wren per container", per, sample, func() error {
		id, err := p.startSleeper(ctx)
		if err == nil {
			ids = append(ids, id)
		}
		return err
	}); err != nil {
		return err
	}
	target := ids[0]
	proc := p.bundle.Spec("/bin/sleep", "1000000").Process
	return growPerUnit(fig, "wren per exec session", per, sample, func() error {
		return p.exec(ctx, target, p.id("idle"), proc)
	})
}

// settledSample samples the agent after it has idled for settle, unless ctx
// ends first.
func settledSample(ctx context.Context, a *AgentProc) (ProcSample, error) {
	select {
	case <-time.After(settle):
	case <-ctx.Done():
		return ProcSample{}, ctx.Err()
	}
	return a.Sample()
}

// growPerUnit adds unitBatches batches of per units with add, samples the
// agent before and after each batch, and adds the growth per unit of each
// batch to fig under subject.
func growPerUnit(fig *Figure, subject string, per int, sample func() (ProcSample, error), add func() error) error {
	prev, err := sample()
	if err != nil {
		return err
	}
	first := prev
	var anon, rss, threads, fds []float64
	for b := 0; b < unitBatches; b++ {
		for i := 0; i < per; i++ {
			if err := add(); err != nil {
				return err
			}
		}
		cur, err := sample()
		if err != nil {
			return err
		}
		anon = append(anon, float64(cur.RssAnon-prev.RssAnon)/float64(per))
		rss = append(rss, float64(cur.RSS-prev.RSS)/float64(per))
		threads = append(threads, float64(cur.Threads-prev.Threads)/float64(per))
		fds = append(fds, float64(cur.FDs-prev.FDs)/float64(per))
		prev = cur
	}
	fig.Add(subject, "RssAnon per unit", "KiB", anon)
	fig.Add(subject, "RSS per unit", "KiB", rss)
	fig.Add(subject, "threads per unit", "", threads)
	fig.Add(subject, "fds per unit", "", fds)
	fig.Note("%s: agent went from RssAnon %d KiB, %d threads, %d fds to %d KiB, %d threads, %d fds over %d units",
		subject, first.RssAnon, first.Threads, first.FDs, prev.RssAnon, prev.Threads, prev.FDs, unitBatches*per)
	return nil
}
