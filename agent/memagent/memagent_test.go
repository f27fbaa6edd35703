package memagent

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/internal/leakcheck"
)

// The agent is run on a root laid out in a temp dir (/proc and a cgroup2
// mount; see compact_test.go and memcg_test.go for why), with
// compact_memory a FIFO the test reads: each compaction is one "1" read
// from it, and a compaction the test does not read stays blocked until
// the agent kills it.

// fakeRoot is a fakeProc with a cgroup2 mount and compact_memory a FIFO.
func fakeRoot(t *testing.T) *fakeProc {
	p := newFakeProc(t)
	p.write("sys/fs/cgroup/cgroup.controllers", "memory io\n")
	fifo := p.path("proc/sys/vm/compact_memory")
	if err := os.Remove(fifo); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// awaitCompaction reads one compaction's write from the FIFO.
func (p *fakeProc) awaitCompaction() {
	p.t.Helper()
	f, err := os.Open(p.path("proc/sys/vm/compact_memory")) // blocks until a compaction opens it
	if err != nil {
		p.t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil || string(b) != "1" {
		p.t.Fatalf("compaction wrote %q, %v", b, err)
	}
}

func u64(v uint64) *uint64 { return &v }

// TestNewNeedsPSI: without pressure files there is nothing to hold the
// jobs back by, and the agent is not made.
func TestNewNeedsPSI(t *testing.T) {
	p := fakeRoot(t)
	if err := os.Remove(p.path("proc/pressure/io")); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Log: quiet, Root: p.root}); err == nil || !strings.Contains(err.Error(), "CONFIG_PSI") {
		t.Fatalf("New without /proc/pressure/io: %v", err)
	}
}

// TestNewAndSetRefuseInvalidTuning: bad starting tuning and bad updates
// are ErrInvalidArgument; a refused update changes nothing, a good one
// only what it sets.
func TestNewAndSetRefuseInvalidTuning(t *testing.T) {
	p := fakeRoot(t)
	if _, err := New(Options{Log: quiet, Root: p.root, Memcg: MemcgUpdate{SwappinessMax: ptr[uint32](300)}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("New with swappiness_max 300: %v", err)
	}
	a, err := New(Options{Log: quiet, Root: p.root, Compact: CompactUpdate{CompactOrder: ptr[uint32](10)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := a.SetMemcg(ctx, MemcgUpdate{Swap: ptr(true), PeriodSecs: u64(0)}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("period_secs 0: %v", err)
	}
	if err := a.SetCompact(ctx, CompactUpdate{CompactSecMax: ptr[int64](-5)}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("compact_sec_max -5: %v", err)
	}
	wantC := DefaultCompact()
	wantC.CompactOrder = 10
	if m, c := a.Config(); m != DefaultMemcg() || c != wantC {
		t.Fatalf("after refused updates: %+v %+v", m, c)
	}
	if err := a.SetMemcg(ctx, MemcgUpdate{Swap: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	if err := a.SetCompact(ctx, CompactUpdate{PeriodSecs: u64(60)}); err != nil {
		t.Fatal(err)
	}
	wantM := DefaultMemcg()
	wantM.Swap = true
	wantC.PeriodSecs = 60
	if m, c := a.Config(); m != wantM || c != wantC {
		t.Fatalf("after updates: %+v %+v", m, c)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := a.SetMemcg(canceled, MemcgUpdate{Swap: ptr(false)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("update with a canceled context: %v", err)
	}
}

// TestRunDoesBothJobsEachPeriodUntilStopped: with one-second periods the
// agent compacts, and reclaims from a cgroup, period after period; when
// its context ends Run returns, with a compaction it had started killed
// and waited for and nothing left behind.
func TestRunDoesBothJobsEachPeriodUntilStopped(t *testing.T) {
	snap := leakcheck.Take(t)
	p := fakeRoot(t)
	cg := p.path("sys/fs/cgroup/c1")
	p.write("sys/fs/cgroup/c1/memory.reclaim", "")
	p.write("sys/fs/cgroup/c1/memory.stat", "inactive_anon 0\ninactive_file 3145728\n")
	p.write("sys/fs/cgroup/c1/memory.pressure", pressureText(0))
	p.write("sys/fs/cgroup/c1/io.pressure", pressureText(0))
	a, err := New(Options{
		Log: quiet, Root: p.root,
		Memcg:   MemcgUpdate{PeriodSecs: u64(1), EvictionRunAgingCountMin: u64(1)},
		Compact: CompactUpdate{PeriodSecs: u64(1), CompactForceTimes: u64(0)},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go a.Run(ctx)
	for range 3 {
		p.awaitCompaction()
	}
	if b, _ := os.ReadFile(filepath.Join(cg, "memory.reclaim")); string(b) != "1048576" {
		t.Errorf("memory.reclaim holds %q, want 1 MiB steps", b)
	}
	// The next compaction blocks on the FIFO unread; stopping kills it.
	cancel()
	<-a.Done()
	snap.Check(t)
}

// TestSetWakesRun: an agent with both jobs off sleeps until an update
// turns one on, which then runs a period later.
func TestSetWakesRun(t *testing.T) {
	snap := leakcheck.Take(t)
	p := fakeRoot(t)
	off := ptr(true)
	a, err := New(Options{Log: quiet, Root: p.root, Memcg: MemcgUpdate{Disabled: off}, Compact: CompactUpdate{Disabled: off}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go a.Run(ctx)
	if err := a.SetCompact(ctx, CompactUpdate{Disabled: ptr(false), PeriodSecs: u64(1), CompactForceTimes: u64(0)}); err != nil {
		t.Fatal(err)
	}
	p.awaitCompaction()
	cancel()
	<-a.Done()
	a.Run(context.Background()) // Run runs once: this returns at once
	snap.Check(t)
}

// TestJobSurvivesPanic: a job that panics is logged, and its next
// period starts as after any run; the agent (PID 1) must not die of it.
func TestJobSurvivesPanic(t *testing.T) {
	p := fakeRoot(t)
	a, err := New(Options{Log: quiet, Root: p.root})
	if err != nil {
		t.Fatal(err)
	}
	before := a.memcgFrom
	a.job(context.Background(), "reclaim", func(context.Context) error { panic("boom") }, &a.memcgFrom)
	if !a.memcgFrom.After(before) {
		t.Error("the period did not restart after the panic")
	}
}

// TestDue: a job is due a period after its period started; when none
// is, the wait is until the first, or forever with both off.
func TestDue(t *testing.T) {
	p := fakeRoot(t)
	a, err := New(Options{Log: quiet, Root: p.root, Compact: CompactUpdate{PeriodSecs: u64(60)}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(1e6, 0)
	now := start
	a.now = func() time.Time { return now }
	a.memcgFrom, a.compactFrom = start, start
	if wait, m, c := a.due(); m || c || wait != time.Minute {
		t.Errorf("at the start: wait %v, due %v %v", wait, m, c)
	}
	now = start.Add(time.Minute)
	if _, m, c := a.due(); m || !c {
		t.Errorf("a minute on: due %v %v; want the compaction", m, c)
	}
	now = start.Add(10 * time.Minute)
	if _, m, c := a.due(); !m || !c {
		t.Errorf("ten minutes on: due %v %v; want both", m, c)
	}
	off := ptr(true)
	if err := a.SetMemcg(context.Background(), MemcgUpdate{Disabled: off}); err != nil {
		t.Fatal(err)
	}
	if err := a.SetCompact(context.Background(), CompactUpdate{Disabled: off}); err != nil {
		t.Fatal(err)
	}
	if wait, m, c := a.due(); m || c || wait >= 0 {
		t.Errorf("both off: wait %v, due %v %v", wait, m, c)
	}
	// Turned on again, a job waits a whole period from then.
	if err := a.SetCompact(context.Background(), CompactUpdate{Disabled: ptr(false)}); err != nil {
		t.Fatal(err)
	}
	if wait, _, c := a.due(); c || wait != time.Minute {
		t.Errorf("compaction turned on again: wait %v, due %v", wait, c)
	}
}
