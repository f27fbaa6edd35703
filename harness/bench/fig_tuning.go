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
	}
}

func figTuning(ctx context.Context, r *Runner) *Figure {
	fig := &Figure{
		ID: "T", Title: "Go runtime settings (data for the agent's defaults)",
		Method: fmt.Sprintf("For each setting, one fresh agent: footprint after %s idle; then a burst (8 concurrent "+
			"callers × 2000 Check, plus CreateSandbox and one container when the agent supports it), %s idle, footprint "+
			"again; then %d Check round trips on one connection.", settle, settle, min(r.S.CheckCalls, 5000)),
	}
	for _, v := range tuningVariants() {
		if err := r.tuneOne(ctx, fig, v.name, v.env); err != nil {
			fig.Skip(v.name, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return fig
}

func (r *Runner) tuneOne(ctx context.Context, fig *Figure, name string, env []string) error {
	agent, err := StartAgent(ctx, r.S.AgentBin, r.S.WorkDir, env)
	if err != nil {
		return err
	}
	defer agent.Stop()
	time.Sleep(settle)
	fresh, err := agent.Sample()
	if err != nil {
		return err
	}
	c, err := agent.Dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := checkBurst.fn(ctx, r, c); err != nil {
		return err
	}
	if err := sandboxOneContainer.fn(ctx, r, c); err != nil {
		fig.Note("%s: no container in the burst: %v", name, err)
	}
	time.Sleep(settle)
	after, err := agent.Sample()
	if err != nil {
		return err
	}
	lat, err := checkLoop(ctx, c.Health, min(r.S.CheckCalls, 5000), nil)
	if err != nil {
		return err
	}
	fig.AddValue(name, "RssAnon fresh", "MiB", float64(fresh.RssAnon)/1024)
	fig.AddValue(name, "RSS fresh", "MiB", float64(fresh.RSS)/1024)
	fig.AddValue(name, "RssAnon after burst", "MiB", float64(after.RssAnon)/1024)
	fig.AddValue(name, "RSS after burst", "MiB", float64(after.RSS)/1024)
	fig.AddValue(name, "threads after burst", "", float64(after.Threads))
	fig.Add(name, "Check round trip", "µs", Micros(lat))
	return nil
}
