package main

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"

	"github.com/wren-vm/wren/agent/cmd/wren-agent/internal/oneproc"
)

// Go runtime defaults for a small per-VM agent, chosen from `make bench`
// (figures 1, T and 4; the data and what did not help are in
// docs/perf/footprint.md). The agent's own work is RPC plumbing; the
// containers are other processes.
//
//   - GOMAXPROCS=1, set by package oneproc while packages initialize (not
//     here): a ttrpc call hops between the connection's reader, the handler
//     and the writer goroutine; with more than one P each hop can wake
//     another vCPU, and idle vCPUs wake slowly in a guest. One P cut the
//     Check round trip by about a third. Set at init rather than here it
//     also spares the second P's cached spans and threads: -0.3 MiB RssAnon
//     fresh and after a sandbox and one container.
//   - Returning memory after bursts: Go's minimum heap goal is 4 MiB, so a
//     burst of calls leaves several MiB of garbage and freed spans that the
//     background scavenger returns only slowly. When allocation goes quiet
//     after at least releaseAfter bytes, and the runtime collected at least
//     once during the burst, the agent collects and returns the free memory
//     to the kernel once (-2.5 MiB RssAnon after a Check burst and one
//     container). Without that second condition a small burst would pay for
//     the agent's first GC cycles, whose metadata (the GC's span-set blocks,
//     about 1 MiB that Go never returns) cost more RssAnon than it gave back.
//   - GOGC and GOMEMLIMIT stay at Go's defaults. GOGC=50 left 5.5 MiB after a
//     burst where the idle release leaves 4.3. A GOMEMLIMIT of 4 or 8 MiB saved 0.3 MiB after a burst but sits
//     just above the agent's idle footprint: with hundreds of containers the
//     live heap passes it and the GC would run continuously (up to its 50 %
//     CPU cap), and the Check round trip already grew with it.
//
// Each default applies only when its environment variable is unset, so an
// operator (or the benchmark's "stock Go" variant) can override it; in the
// guest, GOMAXPROCS=N on the kernel command line reaches the agent's
// environment.
const (
	releaseTick  = time.Second
	quietBytes   = 64 << 10
	releaseAfter = 256 << 10
)

// tuneRuntime applies the defaults and starts the idle releaser, which
// stops with ctx.
func tuneRuntime(ctx context.Context, log *slog.Logger) {
	// GOMAXPROCS is already set: package oneproc does it at init time.
	if os.Getenv("WREN_AGENT_IDLE_RELEASE") == "off" {
		log.Debug("runtime defaults", "gomaxprocs", runtime.GOMAXPROCS(0), "gomaxprocs_default", oneproc.Applied, "idle_release", false)
		return
	}
	log.Debug("runtime defaults", "gomaxprocs", runtime.GOMAXPROCS(0), "gomaxprocs_default", oneproc.Applied, "idle_release", true)
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
