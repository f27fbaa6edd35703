package memagent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/bits"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// compactCommand is the argument that makes the agent's own binary a
// compaction child (CompactHook).
const compactCommand = "memagent-compact"

// CompactHook, called first thing in main, turns a process started as
// `<agent> memagent-compact FILE` into a compaction child: it writes 1 to
// FILE (/proc/sys/vm/compact_memory) and exits. Compaction runs in the
// writing task until it is done, and the only way to stop it early is a
// fatal signal to that task, so it is run in a child that can be killed,
// as Kata's mem-agent runs it in `sh -c "echo 1 > ..."`; a guest need
// not have a shell, but it has the agent.
func CompactHook() {
	if len(os.Args) != 3 || os.Args[1] != compactCommand {
		return
	}
	f, err := os.OpenFile(os.Args[2], os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString("1")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// compactor compacts the guest's memory once a period when it is worth
// it, as Kata's mem-agent does: memory the reclaim frees comes back to
// the host (free page reporting, reclaim_guest_freed_memory) only in
// whole blocks of compact_order, and compaction gathers the scattered
// free pages into such blocks.
//
// A run is skipped when the guest's memory and IO stall over the period
// passed period_psi_percent_limit, or when fragmentation has not grown
// by compact_threshold pages since the last compaction (free movable
// pages in blocks below compact_order, from /proc/pagetypeinfo) and free
// memory has not dropped by as much; compact_force_times runs in a row
// without a compaction force one. A compaction is stopped when the stall
// since it began passes compact_psi_percent_limit, or after
// compact_sec_max seconds.
//
// Stall is the guest's (/proc/pressure), compaction being machine-wide;
// Kata's reads the first cgroup it finds with pressure files. Threshold
// pages are converted to kB with the real page size, where Kata assumes
// 4 KiB.
//
// compactor is used by the agent's loop alone and needs no lock.
type compactor struct {
	log           *slog.Logger
	pressure      [2]string // /proc/pressure/memory, /proc/pressure/io
	meminfo       string
	pagetypeinfo  string
	compactMemory string // /proc/sys/vm/compact_memory
	exe           string // the binary whose CompactHook writes it
	tick          time.Duration
	now           func() time.Time

	stall *stall
	// idle counts the runs in a row that did not compact (Kata's
	// force_counter).
	idle uint64
	// prevFreeKB and prevMovable are free memory and free movable pages
	// below the order after the last compaction.
	prevFreeKB, prevMovable uint64
}

// run is one period's work: skip, or compact. It returns why it did not
// compact or how the compaction ended.
func (c *compactor) run(ctx context.Context, cfg CompactConfig) (string, error) {
	pct, err := c.stall.percent(c.now())
	if err != nil {
		c.idle++
		return "", fmt.Errorf("stall: %w", err)
	}
	if pct > uint64(cfg.PeriodPSIPercentLimit) {
		c.idle++
		return fmt.Sprintf("skipped: stall %d%% over the period", pct), nil
	}
	if cfg.CompactForceTimes == math.MaxUint64 || c.idle < cfg.CompactForceTimes {
		freeKB, movable, err := c.fragmentation(cfg.CompactOrder)
		if err != nil {
			c.idle++
			return "", err
		}
		if !c.fragmented(cfg, freeKB, movable) {
			c.idle++
			return fmt.Sprintf("skipped: %d free movable pages below order %d, %d after the last compaction", movable, cfg.CompactOrder, c.prevMovable), nil
		}
	}
	stop, err := c.compact(ctx, cfg)
	if err != nil {
		return "", err
	}
	freeKB, movable, err := c.fragmentation(cfg.CompactOrder)
	if err != nil {
		return stop, err
	}
	c.prevFreeKB, c.prevMovable, c.idle = freeKB, movable, 0
	return stop, nil
}

// fragmented is Kata's test of whether compaction is worth a run.
func (c *compactor) fragmented(cfg CompactConfig, freeKB, movable uint64) bool {
	thresholdKB := satMul(cfg.CompactThreshold, uint64(syscall.Getpagesize())/1024)
	if c.prevFreeKB > satAdd(freeKB, thresholdKB) {
		return true
	}
	return movable > satAdd(cfg.CompactThreshold, c.prevMovable)
}

// fragmentation reads free memory (kB) and the free movable pages in
// blocks below order.
func (c *compactor) fragmentation(order uint32) (freeKB, movable uint64, err error) {
	if freeKB, err = meminfoKB(c.meminfo, "MemFree"); err != nil {
		return 0, 0, err
	}
	movable, err = freeMovablePages(c.pagetypeinfo, order)
	return freeKB, movable, err
}

// freeMovablePages sums, over every zone, the free pages of the Movable
// migrate type in blocks below order, from lines of /proc/pagetypeinfo
// such as
//
//	Node    0, zone   Normal, type      Movable   2700  11917   9254 ...
//
// (one count of free blocks per order, from order 0).
func freeMovablePages(name string, order uint32) (uint64, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return 0, err
	}
	var total uint64
	found := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		for i := 1; i < len(f); i++ {
			// "type Movable", not the "Unmovable Movable ..." header of
			// the block counts that follow.
			if f[i] != "Movable" || f[i-1] != "type" {
				continue
			}
			found = true
			for o, s := range f[i+1:] {
				if uint32(o) >= order {
					break
				}
				n, err := strconv.ParseUint(s, 10, 64)
				if err != nil {
					return 0, fmt.Errorf("%s: bad count %q", name, s)
				}
				total = satAdd(total, satMul(n, 1<<o))
			}
			break
		}
	}
	if !found {
		return 0, fmt.Errorf("%s: no Movable free counts", name)
	}
	return total, sc.Err()
}

// compact runs one compaction in a child and stops it early when the
// stall passes the limit, when it has run compact_sec_max, or when the
// agent stops. It waits for the child in every case: a killed
// compaction ends at the kernel's next check for a fatal signal.
func (c *compactor) compact(ctx context.Context, cfg CompactConfig) (string, error) {
	cmd := exec.Command(c.exe, compactCommand, c.compactMemory)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start compaction: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stall := newStall(c.pressure[0], c.pressure[1])
	start := c.now()
	_, _ = stall.percent(start)
	ticker := time.NewTicker(c.tick)
	defer ticker.Stop()
	maxRun := time.Duration(cfg.CompactSecMax) * time.Second
	stopping := ctx.Done()
	var stop string
	kill := func(why string) {
		stop = why
		_ = cmd.Process.Kill()
	}
	for {
		select {
		case err := <-done:
			switch {
			case stop != "":
				return stop, nil
			case err != nil:
				return "", fmt.Errorf("compaction: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
			}
			return "compacted", nil
		case <-stopping:
			stopping = nil // once: what is left is to wait for the child
			if stop == "" {
				kill("stopped: agent stopping")
			}
		case <-ticker.C:
			if stop != "" {
				continue
			}
			now := c.now()
			if now.Sub(start) >= maxRun {
				kill(fmt.Sprintf("stopped: ran %ds (compact_sec_max)", cfg.CompactSecMax))
				continue
			}
			pct, err := stall.percent(now)
			if err != nil {
				kill("stopped: no stall reading")
				continue
			}
			if pct > uint64(cfg.CompactPSIPercentLimit) {
				kill(fmt.Sprintf("stopped: stall %d%% over the limit", pct))
			}
		}
	}
}

func satAdd(a, b uint64) uint64 {
	s, carry := bits.Add64(a, b, 0)
	if carry != 0 {
		return math.MaxUint64
	}
	return s
}

func satMul(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	if hi != 0 {
		return math.MaxUint64
	}
	return lo
}
