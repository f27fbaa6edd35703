// Package memagent is the agent's counterpart of Kata's mem-agent: it
// hands back to the host guest memory the containers are not using. A
// guest left alone keeps its page cache and its scattered free pages for
// good, and the host, which sized the VM for a peak, never gets that
// memory back. Two periodic jobs work for it together: the reclaim
// (memcg.go) evicts the memory each container's cgroup has left cold,
// and the compaction (compact.go) gathers free pages into blocks large
// enough for the balloon's free page reporting to return them. Both hold
// back while the guest is stalled on memory or IO (PSI), so that giving
// memory back never costs the workload much.
//
// Like Kata's, it is off unless the kernel command line turns it on
// (agent.mem_agent_enable), starts from Kata's defaults and the
// agent.mem_agent_* keys, and the host retunes it at run time
// (MemAgentMemcgSet, MemAgentCompactSet): fields left out keep their
// values.
package memagent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Options are what an Agent is built from.
type Options struct {
	Log *slog.Logger
	// Memcg and Compact are the starting tuning, over Kata's defaults.
	Memcg   MemcgUpdate
	Compact CompactUpdate
	// Root, when set, stands for / in every path the agent reads and
	// writes (/sys/fs/cgroup, /proc): tests lay out a tree there.
	Root string
	// Exe is the binary started to compact, whose CompactHook does the
	// write; "" is the agent itself (/proc/self/exe).
	Exe string
}

// Agent runs the reclaim and the compaction, each once a period, until
// the context given to Run ends.
type Agent struct {
	log     *slog.Logger
	now     func() time.Time
	memcg   *memcg
	compact *compactor
	// wake tells Run that the configuration changed.
	wake    chan struct{}
	started atomic.Bool
	done    chan struct{}

	mu         sync.Mutex
	memcgCfg   MemcgConfig
	compactCfg CompactConfig
	// memcgFrom and compactFrom start the current periods: a job is due
	// a period after its last run ended, or after it was turned on.
	memcgFrom, compactFrom time.Time
}

// New checks the tuning and what the guest offers, and returns an Agent
// that Run starts. Without PSI nothing can tell when to hold back, so
// that is an error, as in Kata (whose runtime adds psi=1 to the guest's
// command line when it turns the mem-agent on). A guest without cgroup
// v2 or without compaction leaves that job with nothing to do, which is
// logged.
func New(o Options) (*Agent, error) {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	mc, err := DefaultMemcg().With(o.Memcg)
	if err != nil {
		return nil, err
	}
	cc, err := DefaultCompact().With(o.Compact)
	if err != nil {
		return nil, err
	}
	path := func(p string) string { return filepath.Join(o.Root, p) }
	exe := o.Exe
	if exe == "" {
		exe = "/proc/self/exe"
	}
	pressure := [2]string{path("/proc/pressure/memory"), path("/proc/pressure/io")}
	for _, f := range pressure {
		if _, err := someTotal(f); err != nil {
			return nil, fmt.Errorf("mem-agent needs pressure stall information (CONFIG_PSI, psi=1): %w", err)
		}
	}
	cgroups := path("/sys/fs/cgroup")
	if _, err := os.Stat(filepath.Join(cgroups, "cgroup.controllers")); err != nil {
		log.Warn("mem-agent: no cgroup v2 at "+cgroups+"; the reclaim has nothing to work on", "err", err)
	}
	compactMemory := path("/proc/sys/vm/compact_memory")
	if _, err := os.Stat(compactMemory); err != nil {
		log.Warn("mem-agent: the kernel does not compact on request (CONFIG_COMPACTION); the compaction will fail", "err", err)
	}
	now := time.Now
	a := &Agent{
		log:   log,
		now:   now,
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
		memcg: newMemcg(log, cgroups, path("/proc/meminfo"), now),
		compact: &compactor{
			log: log, pressure: pressure, meminfo: path("/proc/meminfo"), pagetypeinfo: path("/proc/pagetypeinfo"),
			compactMemory: compactMemory, exe: exe, tick: time.Second, now: now,
			stall: newStall(pressure[0], pressure[1]),
		},
		memcgCfg:   mc,
		compactCfg: cc,
	}
	// The first runs come a period from now, not at once as in Kata: a
	// guest that just booted has nothing cold yet, and a stall reading
	// taken now lets the first run judge the whole period (Kata's first
	// reading has nothing to compare with and lets it through).
	start := now()
	a.memcgFrom, a.compactFrom = start, start
	_, _ = a.compact.stall.percent(start)
	return a, nil
}

// Config returns the current tuning.
func (a *Agent) Config() (MemcgConfig, CompactConfig) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.memcgCfg, a.compactCfg
}

// SetMemcg retunes the reclaim; nil fields keep their values. An invalid
// value (ErrInvalidArgument) changes nothing. Turning the reclaim on
// starts its period; a new period counts from the last run.
func (a *Agent) SetMemcg(ctx context.Context, u MemcgUpdate) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	a.mu.Lock()
	next, err := a.memcgCfg.With(u)
	if err == nil {
		if a.memcgCfg.Disabled && !next.Disabled {
			a.memcgFrom = a.now()
		}
		a.memcgCfg = next
	}
	a.mu.Unlock()
	if err != nil {
		return err
	}
	a.log.Info("mem-agent: reclaim retuned", "config", fmt.Sprintf("%+v", next))
	a.poke()
	return nil
}

// SetCompact retunes the compaction; nil fields keep their values. An
// invalid value (ErrInvalidArgument) changes nothing. Turning the
// compaction on starts its period; a new period counts from the last run.
func (a *Agent) SetCompact(ctx context.Context, u CompactUpdate) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	a.mu.Lock()
	next, err := a.compactCfg.With(u)
	if err == nil {
		if a.compactCfg.Disabled && !next.Disabled {
			a.compactFrom = a.now()
		}
		a.compactCfg = next
	}
	a.mu.Unlock()
	if err != nil {
		return err
	}
	a.log.Info("mem-agent: compaction retuned", "config", fmt.Sprintf("%+v", next))
	a.poke()
	return nil
}

// poke makes Run look at the configuration again.
func (a *Agent) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// Done is closed when Run has returned.
func (a *Agent) Done() <-chan struct{} { return a.done }

// Run runs the jobs as they fall due until ctx ends; only the first call
// does anything. It is meant for a goroutine of its own: a job's panic
// is logged and the job runs again next period, since the agent (PID 1)
// must outlive its helpers.
func (a *Agent) Run(ctx context.Context) {
	if !a.started.CompareAndSwap(false, true) {
		return
	}
	defer close(a.done)
	defer func() {
		if p := recover(); p != nil {
			a.log.Error("mem-agent stopped: panic", "panic", p)
		}
	}()
	a.log.Info("mem-agent running")
	for {
		wait, memcgDue, compactDue := a.due()
		if memcgDue {
			a.job(ctx, "reclaim", a.runMemcg, &a.memcgFrom)
		}
		if compactDue {
			a.job(ctx, "compaction", a.runCompact, &a.compactFrom)
		}
		if memcgDue || compactDue {
			continue
		}
		if !a.sleep(ctx, wait) {
			a.log.Info("mem-agent stopped")
			return
		}
	}
}

// sleep waits for wait (forever when negative), or until the
// configuration changes; false when ctx ended.
func (a *Agent) sleep(ctx context.Context, wait time.Duration) bool {
	var timeout <-chan time.Time
	if wait >= 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-a.wake:
	case <-timeout:
	}
	return true
}

// due says which jobs are due and, when none is, how long until the
// first one is (-1: both are off).
func (a *Agent) due() (wait time.Duration, memcgDue, compactDue bool) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	wait = -1
	check := func(off bool, at time.Time) bool {
		if off {
			return false
		}
		d := at.Sub(now)
		if d <= 0 {
			return true
		}
		if wait < 0 || d < wait {
			wait = d
		}
		return false
	}
	memcgDue = check(a.memcgCfg.Disabled, a.memcgFrom.Add(a.memcgCfg.period()))
	compactDue = check(a.compactCfg.Disabled, a.compactFrom.Add(a.compactCfg.period()))
	return wait, memcgDue, compactDue
}

// job runs one job with the configuration of the moment (not holding the
// lock: a run takes seconds or minutes), then starts its next period.
func (a *Agent) job(ctx context.Context, name string, run func(context.Context) error, from *time.Time) {
	func() {
		defer func() {
			if p := recover(); p != nil {
				a.log.Error("mem-agent: "+name+" panicked", "panic", p)
			}
		}()
		if err := run(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("mem-agent: "+name+" failed", "err", err)
		}
	}()
	end := a.now()
	a.mu.Lock()
	*from = end
	a.mu.Unlock()
}

func (a *Agent) runMemcg(ctx context.Context) error {
	cfg, _ := a.Config()
	return a.memcg.run(ctx, cfg)
}

func (a *Agent) runCompact(ctx context.Context) error {
	_, cfg := a.Config()
	outcome, err := a.compact.run(ctx, cfg)
	if outcome != "" {
		a.log.Info("mem-agent: compaction", "outcome", outcome)
	}
	return err
}
