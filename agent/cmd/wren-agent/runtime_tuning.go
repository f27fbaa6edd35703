package main

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Go runtime defaults for a small per-VM agent, chosen from `make bench`
// (docs/benchmarks.md, figures T and 4). The agent's own work is RPC
// plumbing; the containers are other processes.
//
//   - GOMAXPROCS=1: a ttrpc call hops between the connection's reader,
//     the handler and the writer goroutine; with more than one P each hop
//     can wake another vCPU, and idle vCPUs wake slowly in a guest. One P
//     cut the Check round trip by about a third and the fresh RssAnon by
//     about 0.3 MiB (fewer Ps, Ms and their caches).
//   - Returning memory after bursts: Go's minimum heap goal is 4 MiB, so a
//     burst of calls leaves several MiB of garbage and freed spans that the
//     background scavenger returns only slowly. When allocation goes quiet
//     after at least releaseAfter bytes, and the runtime collected at least
//     once during the burst, the agent collects and returns the free memory
//     to the kernel once. Without that second condition a small burst
//     (CreateSandbox and one container) would pay for the agent's first GC
//     cycle, whose metadata cost more RssAnon (+0.3-0.5 MiB) than it gave
//     back. GOGC and GOMEMLIMIT stay at Go's defaults: lowering them
//     bought less after bursts and cost latency (p99) during them.
//
// Each default applies only when its environment variable is unset, so an
// operator (or the benchmark's "stock Go" variant) can override it.
const (
	releaseTick  = time.Second
	quietBytes   = 64 << 10
	releaseAfter = 256 << 10
)

// tuneRuntime applies the defaults and starts the idle releaser, which
// stops with ctx.
func tuneRuntime(ctx context.Context, log *slog.Logger) {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	if os.Getenv("WREN_AGENT_IDLE_RELEASE") == "off" {
		log.Debug("runtime defaults", "gomaxprocs", runtime.GOMAXPROCS(0), "idle_release", false)
		return
	}
	log.Debug("runtime defaults", "gomaxprocs", runtime.GOMAXPROCS(0), "idle_release", true)
	go releaseWhenIdle(ctx, releaseTick)
}

// releaseWhenIdle watches the cumulative heap allocation and returns
// memory to the kernel at the first quiet tick after a burst.
func releaseWhenIdle(ctx context.Context, every time.Duration) {
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/cycles/total:gc-cycles"}}
	read := func() (allocs, cycles uint64) {
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 || sample[1].Value.Kind() != metrics.KindUint64 {
			return 0, 0
		}
		return sample[0].Value.Uint64(), sample[1].Value.Uint64()
	}
	var r idleReleaser
	r.step(read())
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if r.step(read()) {
			debug.FreeOSMemory()
		}
	}
}

// idleReleaser decides when to give memory back: at a tick that allocated
// at most quietBytes, once at least releaseAfter bytes were allocated and
// at least one GC cycle ran since the last release. Busy ticks never
// release (that would only add GC work while the heap is growing anyway).
type idleReleaser struct {
	last       uint64
	lastCycles uint64
	started    bool
	pending    uint64
}

// step takes the cumulative allocation and GC cycle counts at a tick and
// reports whether to release now.
func (r *idleReleaser) step(allocs, cycles uint64) bool {
	if !r.started || allocs < r.last {
		r.started, r.last, r.lastCycles = true, allocs, cycles
		return false
	}
	delta := allocs - r.last
	r.last = allocs
	r.pending += delta
	if delta > quietBytes || r.pending < releaseAfter || cycles == r.lastCycles {
		return false
	}
	r.pending = 0
	// FreeOSMemory runs one more cycle; count it so that it alone does
	// not allow the next release.
	r.lastCycles = cycles + 1
	return true
}
