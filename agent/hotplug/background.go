package hotplug

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"
)

// Request is what one OnlineCPUMem asks for.
type Request struct {
	// CPUs is how many hot-added CPUs to bring online; 0 onlines none.
	CPUs uint32
	// CPUOnly leaves memory alone.
	CPUOnly bool
}

// merge folds a later request into one that has not started yet. Each
// request names CPUs hot-added for it, so the counts add up; memory is
// onlined if either asked for it.
func (r Request) merge(o Request) Request {
	cpus := uint64(r.CPUs) + uint64(o.CPUs)
	if cpus > math.MaxUint32 {
		cpus = math.MaxUint32
	}
	return Request{CPUs: uint32(cpus), CPUOnly: r.CPUOnly && o.CPUOnly}
}

// Background runs onlining requests nobody waits for (OnlineCPUMem
// without wait). At most one run is in flight; requests that arrive
// meanwhile are merged into a single next run, so a burst of calls costs
// one goroutine and one pending Request, not a goroutine each that may
// retry for seconds.
type Background struct {
	run     func(context.Context, Request) error
	timeout time.Duration
	log     *slog.Logger

	mu      sync.Mutex
	done    chan struct{} // closed when the current worker exits; nil when idle
	pending Request
	queued  bool
}

// NewBackground returns a Background that calls run for each (merged)
// request, each run bounded by timeout.
func NewBackground(log *slog.Logger, timeout time.Duration, run func(context.Context, Request) error) *Background {
	if log == nil {
		log = slog.Default()
	}
	return &Background{run: run, timeout: timeout, log: log}
}

// Schedule queues r and returns at once: it starts the worker when none
// runs, else merges r into the next run.
func (b *Background) Schedule(r Request) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done != nil {
		if b.queued {
			b.pending = b.pending.merge(r)
		} else {
			b.pending, b.queued = r, true
		}
		return
	}
	b.done = make(chan struct{})
	go b.work(r, b.done)
}

// Wait returns when no run is in flight or queued, or when ctx ends.
func (b *Background) Wait(ctx context.Context) error {
	for {
		b.mu.Lock()
		done := b.done
		b.mu.Unlock()
		if done == nil {
			return nil
		}
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (b *Background) work(r Request, done chan struct{}) {
	for {
		b.runOne(r)
		b.mu.Lock()
		if !b.queued {
			b.done = nil
			b.mu.Unlock()
			close(done)
			return
		}
		r, b.pending, b.queued = b.pending, Request{}, false
		b.mu.Unlock()
	}
}

// runOne runs one request; a panic is logged, not fatal, since this
// goroutine is outside the RPC server's recovery and the agent is PID 1.
func (b *Background) runOne(r Request) {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			b.log.Error("background CPU and memory onlining panicked", "request", fmt.Sprintf("%+v", r), "panic", p)
		}
	}()
	if err := b.run(ctx, r); err != nil {
		b.log.Error("onlining CPUs and memory failed", "cpus", r.CPUs, "cpu_only", r.CPUOnly, "err", err)
	}
}
