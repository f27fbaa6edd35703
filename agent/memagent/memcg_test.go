package memagent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The reclaim is tested on cgroup trees laid out in a temp dir: this
// machine mounts cgroup v2 without the memory controller (it is bound to
// cgroup v1 here), so it has no memory.reclaim or memory.stat to drive.
// A fake kernel behind memory.reclaim (fakeKernel) shrinks memory.stat as
// the real one would. What this machine does have is checked on it: the
// walk over its cgroup2 mount (TestLeavesOnThisMachine) and the pressure
// files (TestStallOnThisMachine).

const mib = 1 << 20

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// clock is a time source that moves only when told to, and by step at
// each reading, so that stall shares have elapsed time to divide by.
type clock struct {
	t    time.Time
	step time.Duration
}

func (c *clock) now() time.Time {
	t := c.t
	c.t = c.t.Add(c.step)
	return t
}

// fakeTree is a root (/) with a cgroup2 mount and /proc/meminfo.
type fakeTree struct {
	t    *testing.T
	root string
}

func newFakeTree(t *testing.T) *fakeTree {
	f := &fakeTree{t: t, root: t.TempDir()}
	f.write("sys/fs/cgroup/cgroup.controllers", "cpu io memory pids\n")
	f.write("sys/fs/cgroup/memory.reclaim", "")
	f.swapFree(0)
	return f
}

func (f *fakeTree) path(rel string) string { return filepath.Join(f.root, rel) }

func (f *fakeTree) write(rel, text string) {
	f.t.Helper()
	p := f.path(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeTree) swapFree(kb uint64) {
	f.write("proc/meminfo", fmt.Sprintf("MemTotal:        2048000 kB\nMemFree:         1024000 kB\nSwapTotal:       %d kB\nSwapFree:        %d kB\n", kb, kb))
}

// cgroup makes a cgroup below the cgroup2 mount with the given inactive
// memory; reclaim false leaves the memory controller off for it.
func (f *fakeTree) cgroup(rel string, file, anon uint64, reclaim bool) string {
	f.t.Helper()
	dir := filepath.Join("sys/fs/cgroup", rel)
	if reclaim {
		f.write(filepath.Join(dir, "memory.reclaim"), "")
	}
	f.stat(dir, file, anon)
	f.write(filepath.Join(dir, "memory.pressure"), pressureText(0))
	f.write(filepath.Join(dir, "io.pressure"), pressureText(0))
	return f.path(dir)
}

func (f *fakeTree) stat(dir string, file, anon uint64) {
	f.t.Helper()
	rel, err := filepath.Rel(f.root, dir)
	if err != nil || strings.HasPrefix(rel, "..") {
		rel = dir
	}
	f.write(filepath.Join(rel, "memory.stat"), fmt.Sprintf("anon 0\nfile 0\ninactive_anon %d\nactive_anon 0\ninactive_file %d\nactive_file 0\npgscan 12\n", anon, file))
}

func pressureText(total uint64) string {
	return fmt.Sprintf("some avg10=0.00 avg60=0.00 avg300=0.00 total=%d\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", total)
}

func (f *fakeTree) memcg(c *clock) *memcg {
	return newMemcg(quiet, f.path("sys/fs/cgroup"), f.path("proc/meminfo"), c.now)
}

// reclaimCall is one write to memory.reclaim.
type reclaimCall struct {
	dir        string
	n          uint64
	swappiness uint64
	withArg    bool
}

// fakeKernel stands behind memory.reclaim: it records each write and
// takes the bytes from the cgroup's memory.stat, anonymous pages first
// at swappiness 200 and page cache first otherwise, and answers EAGAIN
// when there is not enough, as the kernel does. hook, when set, runs
// first and may answer instead.
type fakeKernel struct {
	t     *testing.T
	tree  *fakeTree
	calls []reclaimCall
	hook  func(c reclaimCall) error
}

func (k *fakeKernel) reclaim(dir string, n, swappiness uint64, withArg bool) error {
	c := reclaimCall{dir, n, swappiness, withArg}
	k.calls = append(k.calls, c)
	if k.hook != nil {
		if err := k.hook(c); err != nil {
			return err
		}
	}
	l, err := inactive(dir)
	if err != nil {
		return err
	}
	first, second := &l.file, &l.anon
	if withArg && swappiness == 200 {
		first, second = second, first
	}
	take := min(*first, n)
	*first -= take
	if rest := n - take; rest > 0 {
		if rest > *second {
			return unix.EAGAIN
		}
		*second -= rest
	}
	k.tree.stat(dir, l.file, l.anon)
	return nil
}

func (k *fakeKernel) bytes() uint64 {
	var n uint64
	for _, c := range k.calls {
		n += c.n
	}
	return n
}

func newFake(t *testing.T) (*fakeTree, *fakeKernel, *memcg, *clock) {
	tree := newFakeTree(t)
	k := &fakeKernel{t: t, tree: tree}
	c := &clock{t: time.Unix(1e6, 0), step: time.Millisecond}
	m := tree.memcg(c)
	m.reclaim = k.reclaim
	return tree, k, m, c
}

// TestLeaves: the reclaim works on leaf cgroups with the memory
// controller on, never on the root or on a cgroup with children
// (memory.reclaim is hierarchical: reclaiming a parent would reclaim its
// children a second time).
func TestLeaves(t *testing.T) {
	tree, _, m, _ := newFake(t)
	tree.cgroup("wren", 0, 0, true)
	tree.cgroup("wren/c1", 0, 0, true)
	tree.cgroup("wren/c2", 0, 0, true)
	tree.cgroup("wren/c3", 0, 0, true)
	tree.cgroup("wren/c3/nested", 0, 0, true)
	tree.cgroup("nomem", 0, 0, false)
	got, err := m.leaves()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	var want []string
	for _, rel := range []string{"wren/c1", "wren/c2", "wren/c3/nested"} {
		want = append(want, tree.path(filepath.Join("sys/fs/cgroup", rel)))
	}
	if !slices.Equal(got, want) {
		t.Errorf("leaves = %q, want %q", got, want)
	}
}

// TestLeavesOnThisMachine walks this machine's cgroup2 mount: whatever
// it returns is a leaf that can be reclaimed from (on a hybrid host,
// none: the memory controller is cgroup v1's). Only the walk runs here:
// a run would reclaim the machine's memory.
func TestLeavesOnThisMachine(t *testing.T) {
	m := newMemcg(quiet, cgroup2Mount(t), "/proc/meminfo", time.Now)
	leaves, err := m.leaves()
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range leaves {
		if _, err := os.Stat(filepath.Join(dir, "memory.reclaim")); err != nil {
			t.Errorf("%s: %v", dir, err)
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.IsDir() {
				t.Errorf("%s has child %s", dir, e.Name())
			}
		}
	}
	t.Logf("%d reclaimable leaf cgroups", len(leaves))
}

// TestReclaimsWhatStayedColdAfterAging: with Kata's defaults a cgroup is
// seen in three runs before its first reclaim, and a run reclaims what
// was inactive after the previous run and still is, all of it, in
// steps; pages that became inactive since are left for the next run.
func TestReclaimsWhatStayedColdAfterAging(t *testing.T) {
	tree, k, m, c := newFake(t)
	c1 := tree.cgroup("wren/c1", 100*mib, 50*mib, true)
	ctx, cfg := context.Background(), DefaultMemcg()

	run := func() {
		t.Helper()
		c.t = c.t.Add(cfg.period())
		if err := m.run(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	run()
	tree.stat(c1, 80*mib, 50*mib) // 20 MiB were used again
	run()
	if len(k.calls) != 0 {
		t.Fatalf("reclaimed before the third run: %+v", k.calls)
	}
	tree.stat(c1, 90*mib, 50*mib) // 10 MiB more became inactive
	run()
	if got := k.bytes(); got != 80*mib {
		t.Fatalf("third run reclaimed %d MiB, want the 80 that stayed cold", got/mib)
	}
	for _, call := range k.calls {
		if call.dir != c1 || call.n != reclaimStep || call.withArg {
			t.Fatalf("call %+v: want steps of %d without swappiness (no swap)", call, reclaimStep)
		}
	}
	if l, _ := inactive(c1); l != (lru{file: 10 * mib, anon: 50 * mib}) {
		t.Fatalf("after the reclaim: %+v; the anonymous pages must stay without swap", l)
	}
	k.calls = nil
	run()
	if got := k.bytes(); got != 10*mib {
		t.Fatalf("fourth run reclaimed %d MiB, want 10", got/mib)
	}
}

// TestStalledCgroupIsLeftAloneThatPeriod: a cgroup whose stall over the
// period passed period_psi_percent_limit is not aged or reclaimed in
// that run; the others are.
func TestStalledCgroupIsLeftAloneThatPeriod(t *testing.T) {
	tree, k, m, c := newFake(t)
	c1 := tree.cgroup("c1", 10*mib, 0, true)
	c2 := tree.cgroup("c2", 10*mib, 0, true)
	cfg := DefaultMemcg()
	cfg.EvictionRunAgingCountMin = 2
	if err := m.run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	// Half the period stalled on memory.
	c.t = c.t.Add(cfg.period())
	tree.write(filepath.Join("sys/fs/cgroup/c1", "memory.pressure"), pressureText(uint64(cfg.period().Microseconds()/2)))
	if err := m.run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if a1, a2 := m.cgroups[c1].aged, m.cgroups[c2].aged; a1 != 1 || a2 != 2 {
		t.Errorf("aged: c1 %d, c2 %d; want 1 (stalled) and 2", a1, a2)
	}
	for _, call := range k.calls {
		if call.dir == c1 {
			t.Errorf("the stalled cgroup was reclaimed from: %+v", call)
		}
	}
	if k.bytes() != 10*mib {
		t.Errorf("c2 reclaimed %d bytes, want 10 MiB", k.bytes())
	}
}

// TestReclaimStops: a reclaim ends when the stall it causes passes
// eviction_psi_percent_limit, when the kernel has nothing more to give,
// and when the agent stops.
func TestReclaimStops(t *testing.T) {
	cfg := DefaultMemcg()
	cfg.EvictionRunAgingCountMin = 1
	t.Run("stall", func(t *testing.T) {
		tree, k, m, _ := newFake(t)
		dir := tree.cgroup("c1", 50*mib, 0, true)
		var total uint64
		k.hook = func(reclaimCall) error {
			total += 1_000_000 // a second of stall per step of a millisecond
			tree.write(filepath.Join("sys/fs/cgroup/c1", "memory.pressure"), pressureText(total))
			return nil
		}
		if err := m.run(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
		if len(k.calls) != 1 {
			t.Errorf("%d steps, want 1: the first step's stall stops it", len(k.calls))
		}
		if l, _ := inactive(dir); l.file != 49*mib {
			t.Errorf("left %d MiB", l.file/mib)
		}
	})
	t.Run("nothing more", func(t *testing.T) {
		tree, k, m, _ := newFake(t)
		tree.cgroup("c1", 50*mib, 0, true)
		k.hook = func(reclaimCall) error { return unix.EAGAIN }
		if err := m.run(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
		if len(k.calls) != 1 {
			t.Errorf("%d steps after EAGAIN, want 1", len(k.calls))
		}
	})
	t.Run("agent stops", func(t *testing.T) {
		tree, k, m, _ := newFake(t)
		tree.cgroup("c1", 50*mib, 0, true)
		ctx, cancel := context.WithCancel(context.Background())
		k.hook = func(reclaimCall) error { cancel(); return nil }
		if err := m.run(ctx, cfg); err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		if len(k.calls) != 1 {
			t.Errorf("%d steps after the agent stopped, want 1", len(k.calls))
		}
	})
}

// TestSwap: anonymous pages are reclaimed only with swap asked for and
// swap in the guest; their share is Kata's swappiness, capped by
// swappiness_max, 200 when nothing else is cold, and 0 keeps them out
// when the guest has swap that was not asked for.
func TestSwap(t *testing.T) {
	const gib = 1 << 20 // kB
	tests := []struct {
		name        string
		swapKB      uint64
		swap        bool
		file, anon  uint64
		wantBytes   uint64
		swappiness  uint64
		withArg     bool
		anonTouched bool
	}{
		{name: "capped share", swapKB: gib, swap: true, file: 30 * mib, anon: 10 * mib, wantBytes: 40 * mib, swappiness: 40, withArg: true, anonTouched: true},
		{name: "anonymous only", swapKB: gib, swap: true, file: 0, anon: 10 * mib, wantBytes: 10 * mib, swappiness: 200, withArg: true, anonTouched: true},
		{name: "swap not asked for", swapKB: gib, swap: false, file: 30 * mib, anon: 10 * mib, wantBytes: 30 * mib, swappiness: 0, withArg: true},
		{name: "no swap in the guest", swapKB: 0, swap: true, file: 30 * mib, anon: 10 * mib, wantBytes: 30 * mib, swappiness: 0, withArg: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tree, k, m, _ := newFake(t)
			tree.swapFree(tt.swapKB)
			dir := tree.cgroup("c1", tt.file, tt.anon, true)
			cfg := DefaultMemcg()
			cfg.EvictionRunAgingCountMin, cfg.Swap, cfg.SwappinessMax = 1, tt.swap, 40
			if err := m.run(context.Background(), cfg); err != nil {
				t.Fatal(err)
			}
			if k.bytes() != tt.wantBytes {
				t.Errorf("reclaimed %d MiB, want %d", k.bytes()/mib, tt.wantBytes/mib)
			}
			for _, c := range k.calls {
				if c.swappiness != tt.swappiness || c.withArg != tt.withArg {
					t.Fatalf("call %+v, want swappiness %d with the argument %v", c, tt.swappiness, tt.withArg)
				}
			}
			if l, _ := inactive(dir); (l.anon != tt.anon) != tt.anonTouched {
				t.Errorf("anonymous pages %d MiB of %d", l.anon/mib, tt.anon/mib)
			}
		})
	}
}

// TestKernelWithoutSwappiness: a kernel whose memory.reclaim takes no
// swappiness= (Linux 6.1, the guest kernel's) is asked without it when
// swap was asked for, and not at all when the guest's swap must be kept
// out.
func TestKernelWithoutSwappiness(t *testing.T) {
	for _, swap := range []bool{false, true} {
		t.Run(fmt.Sprintf("swap=%v", swap), func(t *testing.T) {
			tree, k, m, c := newFake(t)
			tree.swapFree(1 << 20)
			tree.cgroup("c1", 4*mib, 4*mib, true)
			k.hook = func(call reclaimCall) error {
				if call.withArg {
					return unix.EINVAL
				}
				return nil
			}
			cfg := DefaultMemcg()
			cfg.EvictionRunAgingCountMin, cfg.Swap = 1, swap
			for range 2 {
				c.t = c.t.Add(cfg.period())
				if err := m.run(context.Background(), cfg); err != nil {
					t.Fatal(err)
				}
			}
			if !m.noSwappiness {
				t.Fatal("the refusal was not remembered")
			}
			withArg, without := 0, 0
			for _, call := range k.calls {
				if call.withArg {
					withArg++
				} else {
					without++
				}
			}
			if withArg != 1 {
				t.Errorf("asked %d times with swappiness=, want once", withArg)
			}
			if swap && without == 0 || !swap && without != 0 {
				t.Errorf("swap %v: %d writes without swappiness=", swap, without)
			}
		})
	}
}

// TestCgroupsComeAndGo: a cgroup made again at the same path (another
// inode) starts its aging over, and one that is gone is forgotten.
func TestCgroupsComeAndGo(t *testing.T) {
	tree, k, m, _ := newFake(t)
	c1 := tree.cgroup("c1", 10*mib, 0, true)
	c2 := tree.cgroup("c2", 10*mib, 0, true)
	cfg := DefaultMemcg()
	for range 2 {
		if err := m.run(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	// As if c1 had been removed and made again: a file system may give
	// the new directory the old inode, kernfs does not.
	m.cgroups[c1].ino++
	if err := os.RemoveAll(c2); err != nil {
		t.Fatal(err)
	}
	if err := m.run(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if len(k.calls) != 0 {
		t.Errorf("the new c1 was reclaimed from in its first run: %+v", k.calls)
	}
	if s := m.cgroups[c1]; s == nil || s.aged != 1 {
		t.Errorf("new c1: %+v, want aged 1", s)
	}
	if _, ok := m.cgroups[c2]; ok {
		t.Error("the removed c2 is still tracked")
	}
}

// TestWriteReclaim: what goes into memory.reclaim.
func TestWriteReclaim(t *testing.T) {
	for _, tt := range []struct {
		withArg bool
		want    string
	}{{true, "1048576 swappiness=40"}, {false, "1048576"}} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "memory.reclaim"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := writeReclaim(dir, mib, 40, tt.withArg); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "memory.reclaim")); string(b) != tt.want {
			t.Errorf("wrote %q, want %q", b, tt.want)
		}
	}
	if err := writeReclaim(t.TempDir(), mib, 0, false); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("writing a missing memory.reclaim: %v", err)
	}
}

func TestDivRound(t *testing.T) {
	for _, tt := range []struct{ a, b, want uint64 }{{200 * 100, 150, 133}, {1, 2, 1}, {1, 3, 0}, {5, 5, 1}} {
		if got := divRound(tt.a, tt.b); got != tt.want {
			t.Errorf("divRound(%d, %d) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
