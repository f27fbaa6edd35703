package bench

import (
	"context"
	"fmt"
	"runtime"
	"time"
)

// tuningVariants are the Go runtime settings compared in figure T. The
// first is stock Go, spelled out so that it also overrides any default the
// agent sets for itself (the agent applies its defaults only where the
// variable is unset).
func tuningVariants() []struct {
	name string
	env  []string
} {
	n := fmt.Sprintf("GOMAXPROCS=%d", runtime.NumCPU())
	stock := []string{n, "GOGC=100", "GOMEMLIMIT=off", "WREN_AGENT_IDLE_RELEASE=off"}
	return []struct {
		name string
		env  []string
	}{
		{"stock Go (" + envString(stock) + ")", stock},
		{"agent defaults (no env)", nil},
		{"GOMAXPROCS=1 only", []string{"GOMAXPROCS=1", "GOGC=100", "GOMEMLIMIT=off", "WREN_AGENT_IDLE_RELEASE=off"}},
		{"idle release only", []string{n, "GOGC=100", "GOMEMLIMIT=off"}},
		{"GOGC=50", []string{n, "GOGC=50", "GOMEMLIMIT=off", "WREN_AGENT_IDLE_RELEASE=off"}},
		{"GOMEMLIMIT=4MiB", []string{n, "GOGC=100", "GOMEMLIMIT=4MiB", "WREN_AGENT_IDLE_RELEASE=off"}},
		{"agent defaults + GOMEMLIMIT=8MiB", []string{"GOMEMLIMIT=8MiB"}},
	}
}

// tuningRepeats is how many fresh agents each setting gets; the rounds go
// through every setting in turn, so that drift on a shared machine falls on
// all of them alike.
const tuningRepeats = 3

// tuneResult is what one fresh agent showed under one setting.
type tuneResult struct {
	fresh, after ProcSample
	lat          []time.Duration
}

func figTuning(ctx context.Context, r *Runner) *Figure {
	checks := min(r.S.CheckCalls, 5000) / tuningRepeats
	fig := &Figure{
		ID: "T", Title: "Go runtime settings (data for the agent's defaults)",
		Method: fmt.Sprintf("For each setting, %d fresh agents (the settings take turns): footprint after %s idle; then a burst (8 concurrent "+
			"callers × 2000 Check, plus CreateSandbox and one container when the agent supports it), %s idle, footprint "+
			"again; then %d Check round trips on one connection (all agents' round trips pooled).", tuningRepeats, settle, settle, checks),
	}
	variants := tuningVariants()
	results := make([][]tuneResult, len(variants))
	failed := make([]bool, len(variants))
	for round := 0; round < tuningRepeats && ctx.Err() == nil; round++ {
		for i, v := range variants {
			if failed[i] || ctx.Err() != nil {
				continue
			}
			res, err := r.tuneOne(ctx, fig, v.name, v.env, checks)
			if err != nil {
				fig.Skip(v.name, err)
				failed[i] = true
				continue
			}
			results[i] = append(results[i], res)
		}
	}
	for i, v := range variants {
		if failed[i] || len(results[i]) == 0 {
			continue
		}
		addTuning(fig, v.name, results[i])
	}
	return fig
}

func addTuning(fig *Figure, name string, res []tuneResult) {
	pick := func(f func(tuneResult) float64) []float64 {
		out := make([]float64, len(res))
		for i, x := range res {
			out[i] = f(x)
		}
		return out
	}
	var lat []time.Duration
	for _, x := range res {
		lat = append(lat, x.lat...)
	}
	fig.Add(name, "RssAnon fresh", "MiB", pick(func(x tuneResult) float64 { return float64(x.fresh.RssAnon) / 1024 }))
	fig.Add(name, "RSS fresh", "MiB", pick(func(x tuneResult) float64 { return float64(x.fresh.RSS) / 1024 }))
	fig.Add(name, "RssAnon after burst", "MiB", pick(func(x tuneResult) float64 { return float64(x.after.RssAnon) / 1024 }))
	fig.Add(name, "RSS after burst", "MiB", pick(func(x tuneResult) float64 { return float64(x.after.RSS) / 1024 }))
	fig.Add(name, "threads after burst", "", pick(func(x tuneResult) float64 { return float64(x.after.Threads) }))
	fig.Add(name, "Check round trip", "µs", Micros(lat))
}

func (r *Runner) tuneOne(ctx context.Context, fig *Figure, name string, env []string, checks int) (tuneResult, error) {
	var res tuneResult
	agent, err := StartAgent(ctx, r.S.AgentBin, r.S.WorkDir, env)
	if err != nil {
		return res, err
	}
	defer func() { r.logCleanup("stop the agent", agent.Stop()) }()
	time.Sleep(settle)
	if res.fresh, err = agent.Sample(); err != nil {
		return res, err
	}
	c, err := agent.Dial(ctx)
	if err != nil {
		return res, err
	}
	defer c.Close()
	if err := checkBurst.fn(ctx, r, c); err != nil {
		return res, err
	}
	if err := sandboxOneContainer.fn(ctx, r, c); err != nil {
		fig.Note("%s: no container in the burst: %v", name, err)
	}
	time.Sleep(settle)
	if res.after, err = agent.Sample(); err != nil {
		return res, err
	}
	res.lat, err = checkLoop(ctx, c.Health, checks, nil)
	return res, err
}
