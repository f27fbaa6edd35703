package memagent

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/internal/leakcheck"
)

// TestMain lets this test binary be the compaction child, as the agent's
// binary is (CompactHook).
func TestMain(m *testing.M) {
	CompactHook()
	os.Exit(m.Run())
}

// The compaction is tested with /proc laid out in a temp dir, its
// compact_memory a plain file (or a FIFO, for a compaction that does not
// end by itself). This machine would let a test write its real
// /proc/sys/vm/compact_memory, but it is shared: compaction moves every
// process's pages and would disturb whatever else runs here. What is
// read from /proc is checked on this machine's own files
// (TestFragmentationOnThisMachine).

// TestFragmentationOnThisMachine reads this machine's /proc/pagetypeinfo
// and /proc/meminfo.
func TestFragmentationOnThisMachine(t *testing.T) {
	c := &compactor{meminfo: "/proc/meminfo", pagetypeinfo: "/proc/pagetypeinfo"}
	freeKB, all, err := c.fragmentation(maxOrder + 1)
	if err != nil {
		t.Fatal(err)
	}
	if freeKB == 0 || all == 0 {
		t.Fatalf("free %d kB, %d free movable pages: a running machine has some", freeKB, all)
	}
	if _, none, err := c.fragmentation(0); err != nil || none != 0 {
		t.Fatalf("below order 0: %d, %v", none, err)
	}
	// Free movable pages are free pages: at most MemFree.
	if kb := all * uint64(os.Getpagesize()) / 1024; kb > freeKB {
		t.Errorf("%d kB of free movable pages, more than MemFree %d kB", kb, freeKB)
	}
}

const pagetypeinfo = `Page block order: 9
Pages per block:  512

Free pages count per migrate type at order       0      1      2      3      4      5      6      7      8      9     10 
Node    0, zone      DMA, type    Unmovable      0      0      0      0      0      0      0      0      1      0      0 
Node    0, zone      DMA, type      Movable      1      1      1      1      0      0      0      0      0      1      3 
Node    0, zone      DMA, type  Reclaimable      0      0      0      0      0      0      0      0      0      0      0 
Node    0, zone   Normal, type    Unmovable    134    491    440    389    164     70     44     19      2      0      0 
Node    0, zone   Normal, type      Movable   %d      0      0      0      0      0      0      0      0      0      0 
Node    0, zone   Normal, type  Reclaimable      0    123    200     63     11      7      2      4      2      0      0 

Number of blocks type     Unmovable      Movable  Reclaimable   HighAtomic      Isolate 
Node 0, zone      DMA            1            7            0            0            0 
Node 0, zone   Normal           77         3995           24            0            0 
`

// TestFreeMovablePages: the Movable counts of every zone, each block
// counted in pages, below the order; not the block counts' header.
func TestFreeMovablePages(t *testing.T) {
	f := filepath.Join(t.TempDir(), "pagetypeinfo")
	if err := os.WriteFile(f, []byte(fmt.Sprintf(pagetypeinfo, 100)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		order uint32
		want  uint64
	}{{0, 0}, {1, 101}, {3, 100 + 1 + 2 + 4}, {9, 100 + 1 + 2 + 4 + 8}, {11, 100 + 15 + 512 + 3*1024}} {
		if got, err := freeMovablePages(f, tt.order); err != nil || got != tt.want {
			t.Errorf("order %d: %d, %v; want %d", tt.order, got, err, tt.want)
		}
	}
	if err := os.WriteFile(f, []byte("Page block order: 9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := freeMovablePages(f, 9); err == nil {
		t.Error("no Movable line, no error")
	}
}

// fakeProc lays out what the compaction reads and writes.
type fakeProc struct {
	t    *testing.T
	root string
}

func newFakeProc(t *testing.T) *fakeProc {
	p := &fakeProc{t: t, root: t.TempDir()}
	p.pressure(0)
	p.write("proc/pressure/io", pressureText(0))
	p.memory(1_000_000, 2000)
	p.write("proc/sys/vm/compact_memory", "")
	return p
}

func (p *fakeProc) path(rel string) string { return filepath.Join(p.root, rel) }

// write replaces a file whole, as the kernel's files read: a reader
// never sees it half written.
func (p *fakeProc) write(rel, text string) {
	p.t.Helper()
	name := p.path(rel)
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		p.t.Fatal(err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(name), ".new-*")
	if err == nil {
		_, err = tmp.WriteString(text)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp.Name(), name)
	}
	if err != nil {
		p.t.Fatal(err)
	}
}

func (p *fakeProc) pressure(total uint64) { p.write("proc/pressure/memory", pressureText(total)) }

// memory sets MemFree and the free order-0 movable pages.
func (p *fakeProc) memory(freeKB, movable uint64) {
	p.write("proc/meminfo", fmt.Sprintf("MemTotal: 4000000 kB\nMemFree: %d kB\nSwapFree: 0 kB\n", freeKB))
	p.write("proc/pagetypeinfo", fmt.Sprintf(pagetypeinfo, movable))
}

// compacted reports whether compact_memory was written, and empties it.
func (p *fakeProc) compacted() bool {
	p.t.Helper()
	b, err := os.ReadFile(p.path("proc/sys/vm/compact_memory"))
	if err != nil {
		p.t.Fatal(err)
	}
	p.write("proc/sys/vm/compact_memory", "")
	switch string(b) {
	case "":
		return false
	case "1":
		return true
	}
	p.t.Fatalf("compact_memory holds %q", b)
	return false
}

func (p *fakeProc) compactor(now func() time.Time) *compactor {
	pressure := [2]string{p.path("proc/pressure/memory"), p.path("proc/pressure/io")}
	c := &compactor{
		log: quiet, pressure: pressure, meminfo: p.path("proc/meminfo"), pagetypeinfo: p.path("proc/pagetypeinfo"),
		compactMemory: p.path("proc/sys/vm/compact_memory"), exe: "/proc/self/exe", tick: 5 * time.Millisecond, now: now,
		stall: newStall(pressure[0], pressure[1]),
	}
	_, _ = c.stall.percent(now())
	return c
}

// TestCompactionDecisions follows Kata's: compact when free movable
// pages below the order grew by compact_threshold since the last
// compaction, or free memory fell by as much; not when the period was
// stalled; and after compact_force_times idle runs whatever the state.
func TestCompactionDecisions(t *testing.T) {
	p := newFakeProc(t)
	clk := &clock{t: time.Unix(1e6, 0), step: time.Millisecond}
	c := p.compactor(clk.now)
	cfg := DefaultCompact() // threshold 1024 pages, order 9
	run := func(want bool, why string) {
		t.Helper()
		clk.t = clk.t.Add(cfg.period())
		outcome, err := c.run(context.Background(), cfg)
		if err != nil {
			t.Fatalf("%s: %v", why, err)
		}
		if got := p.compacted(); got != want {
			t.Fatalf("%s: compacted %v (%q), want %v", why, got, outcome, want)
		}
	}
	// The DMA zone of the template adds 15 pages below order 9.
	p.memory(1_000_000, 1000)
	run(false, "1015 free movable pages, not over the threshold")
	p.memory(1_000_000, 1010)
	run(true, "1025 free movable pages, over the threshold")
	if c.prevMovable != 1025 || c.prevFreeKB != 1_000_000 || c.idle != 0 {
		t.Fatalf("after compacting: %+v", c)
	}
	p.memory(1_000_000, 2000)
	run(false, "990 more than after the last compaction")
	p.memory(1_000_000, 2050)
	run(true, "1040 more than after the last compaction")
	pageKB := uint64(os.Getpagesize() / 1024)
	p.memory(1_000_000-1024*pageKB, 2050)
	run(false, "free memory fell by the threshold, not more")
	p.memory(1_000_000-1025*pageKB, 2050)
	run(true, "free memory fell by more than the threshold")

	// Stall over the period (half of it) holds compaction back, even
	// with fragmentation over the threshold.
	p.memory(1_000_000, 9000)
	p.pressure(uint64(cfg.period().Microseconds() / 2))
	run(false, "stalled period")
	run(true, "calm period")

	cfg.CompactForceTimes = 2
	run(false, "not fragmented: idle 1")
	run(false, "not fragmented: idle 2")
	run(true, "forced after two idle runs")
	cfg.CompactForceTimes = 0
	run(true, "forced every run")
	cfg.CompactForceTimes = math.MaxUint64
	run(false, "never forced")
}

// TestCompactionStops: a compaction that does not end by itself (the
// child blocks opening a FIFO no one reads) is killed after
// compact_sec_max, when the stall since it began passes
// compact_psi_percent_limit, or when the agent stops, and the child is
// waited for every time.
func TestCompactionStops(t *testing.T) {
	for _, tt := range []struct {
		name string
		set  func(*CompactConfig, *fakeProc, context.CancelFunc) (done func())
		want string
	}{
		{
			name: "compact_sec_max",
			set: func(c *CompactConfig, _ *fakeProc, _ context.CancelFunc) func() {
				c.CompactSecMax = 0
				return func() {}
			},
			want: "stopped: ran 0s (compact_sec_max)",
		},
		{
			name: "stall",
			set: func(c *CompactConfig, p *fakeProc, _ context.CancelFunc) func() {
				// Stall keeps growing, a second of it every few
				// milliseconds, until the compaction is stopped.
				stop := make(chan struct{})
				go func() {
					for total := uint64(0); ; total += 1_000_000 {
						select {
						case <-stop:
							return
						case <-time.After(2 * time.Millisecond):
						}
						p.pressure(total)
					}
				}()
				return func() { close(stop) }
			},
			want: "stopped: stall",
		},
		{
			name: "agent stops",
			set: func(_ *CompactConfig, _ *fakeProc, cancel context.CancelFunc) func() {
				cancel()
				return func() {}
			},
			want: "stopped: agent stopping",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			snap := leakcheck.Take(t)
			p := newFakeProc(t)
			fifo := p.path("proc/sys/vm/compact_memory")
			if err := os.Remove(fifo); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			c := p.compactor(time.Now)
			cfg := DefaultCompact()
			cfg.CompactForceTimes = 0
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := tt.set(&cfg, p, cancel)
			outcome, err := c.run(ctx, cfg)
			done()
			if err != nil || !strings.HasPrefix(outcome, tt.want) {
				t.Fatalf("outcome %q, %v; want %q", outcome, err, tt.want)
			}
			if c.idle != 0 {
				t.Errorf("a stopped compaction still counts as one: idle %d", c.idle)
			}
			snap.Check(t)
		})
	}
}

// TestCompactionChildFails: a compaction that cannot write is an error
// that says why.
func TestCompactionChildFails(t *testing.T) {
	p := newFakeProc(t)
	c := p.compactor(time.Now)
	c.compactMemory = p.path("proc/sys/vm/nothing")
	cfg := DefaultCompact()
	cfg.CompactForceTimes = 0
	_, err := c.run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("%v, want the child's error", err)
	}
}
