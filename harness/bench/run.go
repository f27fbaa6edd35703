package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"
)

// Settings are the counts and paths of a run. Full runs use the defaults;
// quick runs scale the counts down.
type Settings struct {
	AgentBin string `json:"-"`
	// BaselineBin, when set, is an older agent binary measured beside
	// AgentBin in figures 1, 4, 5, 6 and 7 (subjects "… (before)"): how a change
	// lands with its before/after figure from one run.
	BaselineBin string `json:"-"`
	// PolicyAgentBin is the agent built with the policy engine (make
	// agent-policy), for figure P.
	PolicyAgentBin string `json:"-"`
	Baseline       string `json:"baseline,omitempty"`
	WorkDir        string `json:"-"`
	// HostCgroupMode is the host's cgroup mode when the run happens in a
	// private mount namespace that hides part of it.
	HostCgroupMode string `json:"host_cgroup_mode,omitempty"`
	// PrivateMountNS is set when the benchmark runs in a private mount
	// namespace with the cgroup2 mount removed (so crun can run).
	PrivateMountNS bool `json:"private_mount_ns"`

	CheckCalls      int   `json:"check_calls"`
	LifecycleRuns   int   `json:"lifecycle_runs"`
	ExecRuns        int   `json:"exec_runs"`
	StdoutBytes     int64 `json:"stdout_bytes"`
	ChurnContainers int   `json:"churn_containers"`
	ChurnExecs      int   `json:"churn_execs"`
	FootprintExecs  int   `json:"footprint_execs"`
	// Only limits the run to these figure ids (all when empty).
	Only []string `json:"only,omitempty"`
	// Runc and Crun are the peer binaries ("" to look them up on PATH).
	Runc string `json:"-"`
	Crun string `json:"-"`
}

// FullSettings are the counts of `make bench`.
func FullSettings() Settings {
	return Settings{
		CheckCalls:      20000,
		LifecycleRuns:   100,
		ExecRuns:        200,
		StdoutBytes:     1 << 30,
		ChurnContainers: 500,
		ChurnExecs:      10000,
		FootprintExecs:  50,
	}
}

// Scale divides every count by div (at least a few samples stay).
func (s Settings) Scale(div int) Settings {
	if div <= 1 {
		return s
	}
	atLeast := func(n, min int) int { return max(n/div, min) }
	s.CheckCalls = atLeast(s.CheckCalls, 1000)
	s.LifecycleRuns = atLeast(s.LifecycleRuns, 10)
	s.ExecRuns = atLeast(s.ExecRuns, 10)
	s.StdoutBytes = max(s.StdoutBytes/int64(div), 16<<20)
	s.ChurnContainers = atLeast(s.ChurnContainers, 5)
	s.ChurnExecs = atLeast(s.ChurnExecs, 50)
	s.FootprintExecs = atLeast(s.FootprintExecs, 10)
	return s
}

func (s Settings) wants(id string) bool {
	return len(s.Only) == 0 || slices.Contains(s.Only, id)
}

// agentVariant is one agent binary under a subject prefix.
type agentVariant struct{ subject, bin string }

// agents lists the agent binaries to measure: the current one, and the
// baseline when there is one.
func (r *Runner) agents() []agentVariant {
	out := []agentVariant{{"wren", r.S.AgentBin}}
	if r.S.BaselineBin != "" {
		out = append(out, agentVariant{"wren (before)", r.S.BaselineBin})
	}
	return out
}

// figureFunc measures one figure.
type figureFunc func(ctx context.Context, r *Runner) *Figure

// Runner carries what figures share during a run.
type Runner struct {
	S   Settings
	Log *slog.Logger
	// Bundle is the busybox bundle shared by Wren and its peers.
	bundle *Bundle
	// deadline is when the run should be done (see RunBudget); figures
	// with open-ended loops shrink them to fit.
	deadline time.Time
}

// RunBudget is what `make bench` may take; the time-bounded parts of
// figures 7 and 8 shrink so that the whole run ends within it.
const RunBudget = 14 * time.Minute

// budget returns want, cut so that reserve is left before the run's
// deadline, and never below floor.
func (r *Runner) budget(want, reserve, floor time.Duration) time.Duration {
	left := time.Until(r.deadline) - reserve
	return max(min(want, left), floor)
}

// Run measures every figure the settings select.
func Run(ctx context.Context, s Settings, log *slog.Logger) (*Report, error) {
	if _, err := os.Stat(s.AgentBin); err != nil {
		return nil, fmt.Errorf("agent binary: %w", err)
	}
	r := &Runner{S: s, Log: log, deadline: time.Now().Add(RunBudget)}
	rep := &Report{Schema: SchemaVersion, Started: time.Now().UTC(), Machine: DescribeMachine(s.HostCgroupMode), Settings: s}
	figures := []struct {
		id string
		fn figureFunc
	}{
		{"3", figBinarySize},
		{"4", figCheck},
		{"1", figIdle},
		{"T", figTuning},
		{"P", figPolicy},
	}
	figures = append(figures, containerFigures...)
	for _, f := range figures {
		if !s.wants(f.id) {
			continue
		}
		start := time.Now()
		log.Info("figure", "id", f.id)
		fig := f.fn(ctx, r)
		if fig == nil {
			continue
		}
		fig.Note("measured in %.1f s", time.Since(start).Seconds())
		rep.Figures = append(rep.Figures, fig)
		if ctx.Err() != nil {
			break
		}
	}
	slices.SortStableFunc(rep.Figures, func(a, b *Figure) int {
		if figureLess(a.ID, b.ID) {
			return -1
		}
		if figureLess(b.ID, a.ID) {
			return 1
		}
		return 0
	})
	if r.bundle != nil {
		r.bundle.Remove()
	}
	rep.Seconds = time.Since(rep.Started).Seconds()
	return rep, ctx.Err()
}

// logCleanup logs a clean-up step that failed: the figure stands, and the
// failure (an agent that ignored SIGTERM, a container left) is worth a look.
func (r *Runner) logCleanup(step string, err error) {
	if err != nil && r.Log != nil {
		r.Log.Warn("clean-up failed", "step", step, "err", err)
	}
}

// failed makes a figure that records why it could not be measured.
func failed(fig *Figure, subject string, err error) *Figure {
	fig.Skip(subject, err)
	return fig
}

// undoStack holds what undoes each step of a set-up: what a figure started
// and must stop when it is done, or when a later step fails.
type undoStack []func() error

func (u *undoStack) push(undo func() error) { *u = append(*u, undo) }

// run undoes every step, the last one first, and joins their errors.
func (u *undoStack) run() error {
	var errs []error
	for i := len(*u) - 1; i >= 0; i-- {
		errs = append(errs, (*u)[i]())
	}
	return errors.Join(errs...)
}

// envString prints an environment list for the method text.
func envString(env []string) string {
	if len(env) == 0 {
		return "(none)"
	}
	return strings.Join(env, " ")
}
