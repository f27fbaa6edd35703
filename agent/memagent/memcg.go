package memagent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// reclaimStep is how much one write to memory.reclaim asks for. Small
// steps let the stall check between them stop a reclaim that starts to
// hurt before it has gone far, which is what eviction_psi_percent_limit
// is for (Kata's evicts a batch at a time for the same reason); a write
// costs the kernel little more than the reclaim itself.
const reclaimStep = 1 << 20

// swapPagesMin is how many free swap pages make swap worth using, as in
// Kata's mem-agent: below it anonymous pages are left alone.
const swapPagesMin = 256

// memcg reclaims cold memory from the guest's memory cgroups (cgroup v2),
// one run per period, as Kata's mem-agent does with MGLRU: each run
// looks at every cgroup, skips those whose memory and IO stall over the
// period passed period_psi_percent_limit, ages the rest, and from a
// cgroup seen in eviction_run_aging_count_min runs reclaims the pages
// that stayed cold since the previous run, stopping as soon as the stall
// the reclaim causes passes eviction_psi_percent_limit.
//
// Where Kata reads and drives the MGLRU generations of each cgroup
// through debugfs (lru_gen), this uses what a guest kernel without
// CONFIG_LRU_GEN or debugfs has: a cgroup's inactive LRU lists
// (memory.stat) stand for its oldest generation, and memory.reclaim
// evicts. Pages cold since the previous run are at most what was inactive
// after it and still is, so that is what a run reclaims. Reclaim through
// memory.reclaim is hierarchical, so it is done on leaf cgroups only,
// where a container's tasks and their memory are; Kata's per-NUMA-node
// configurations have no counterpart (memory.reclaim takes no node).
//
// memcg is used by the agent's loop alone and needs no lock.
type memcg struct {
	log     *slog.Logger
	root    string // the cgroup2 mount
	meminfo string // /proc/meminfo, for free swap
	now     func() time.Time

	// reclaim writes memory.reclaim (writeReclaim); tests stand in for
	// the kernel behind it.
	reclaim func(dir string, n, swappiness uint64, withArg bool) error

	cgroups map[string]*cgroupState
	// noSwappiness is set once the kernel refused memory.reclaim's
	// swappiness= argument, which came after Linux 6.1 (the guest
	// kernel's).
	noSwappiness bool
}

// cgroupState is what runs remember of one cgroup.
type cgroupState struct {
	// ino tells a cgroup from a new one made at the same path, which
	// starts over, as in Kata (which compares memcg ids and inodes).
	ino   uint64
	stall *stall
	// aged counts the runs that saw the cgroup and found it calm (Kata's
	// run_aging_count).
	aged uint64
	// cold is the cgroup's inactive memory after the previous run.
	cold lru
}

// lru is the memory of a cgroup's inactive lists, in bytes.
type lru struct{ file, anon uint64 }

func newMemcg(log *slog.Logger, root, meminfo string, now func() time.Time) *memcg {
	return &memcg{log: log, root: root, meminfo: meminfo, now: now, reclaim: writeReclaim, cgroups: map[string]*cgroupState{}}
}

// run does one period's work over every leaf cgroup and forgets the
// cgroups that are gone.
func (m *memcg) run(ctx context.Context, cfg MemcgConfig) error {
	leaves, err := m.leaves()
	if err != nil {
		return err
	}
	seen := make(map[string]bool, len(leaves))
	for _, dir := range leaves {
		if err := ctx.Err(); err != nil {
			return err
		}
		seen[dir] = true
		m.visit(ctx, cfg, dir)
	}
	for dir := range m.cgroups {
		if !seen[dir] {
			delete(m.cgroups, dir)
		}
	}
	return nil
}

// leaves lists the cgroups below the root that have no child cgroups and
// can be reclaimed from (memory.reclaim: the memory controller is on for
// them). A cgroup removed during the walk is left out.
func (m *memcg) leaves() ([]string, error) {
	var out []string
	var walk func(dir string) (bool, error)
	walk = func(dir string) (bool, error) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return false, err
		}
		children := false
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			children = true
			sub := filepath.Join(dir, e.Name())
			leaf, err := walk(sub)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return false, err
			}
			if leaf {
				if _, err := os.Stat(filepath.Join(sub, "memory.reclaim")); err == nil {
					out = append(out, sub)
				}
			}
		}
		return !children, nil
	}
	_, err := walk(m.root)
	return out, err
}

// visit is one run's work on one cgroup.
func (m *memcg) visit(ctx context.Context, cfg MemcgConfig, dir string) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		delete(m.cgroups, dir)
		return
	}
	s := m.cgroups[dir]
	if s == nil || s.ino != st.Ino {
		s = &cgroupState{ino: st.Ino, stall: newStall(filepath.Join(dir, "memory.pressure"), filepath.Join(dir, "io.pressure"))}
		m.cgroups[dir] = s
	}
	pct, err := s.stall.percent(m.now())
	if err != nil {
		m.log.Debug("mem-agent: no stall reading; cgroup left alone this period", "cgroup", dir, "err", err)
		return
	}
	if pct > uint64(cfg.PeriodPSIPercentLimit) {
		m.log.Info("mem-agent: cgroup stalled over the period; not reclaimed", "cgroup", dir, "stall_percent", pct, "limit", cfg.PeriodPSIPercentLimit)
		return
	}
	cur, err := inactive(dir)
	if err != nil {
		m.log.Debug("mem-agent: no memory.stat; cgroup left alone this period", "cgroup", dir, "err", err)
		return
	}
	s.aged++
	if s.aged == 1 {
		// Nothing is known of the time before: what is inactive now is
		// all that can be cold.
		s.cold = cur
	}
	if s.aged >= cfg.EvictionRunAgingCountMin {
		m.evict(ctx, cfg, dir, lru{file: min(s.cold.file, cur.file), anon: min(s.cold.anon, cur.anon)})
		if cur, err = inactive(dir); err != nil {
			return
		}
	}
	s.cold = cur
}

// evict reclaims up to cold from the cgroup in steps, and stops early
// when the kernel finds nothing more to take, when the stall the reclaim
// causes passes the limit, or when the agent stops.
func (m *memcg) evict(ctx context.Context, cfg MemcgConfig, dir string, cold lru) {
	haveSwap := m.swapPages() > swapPagesMin
	if !cfg.Swap || !haveSwap {
		cold.anon = 0
	}
	if cold.file+cold.anon == 0 {
		return
	}
	// The share of anonymous pages, on the kernel's swappiness scale, as
	// Kata computes it; only anonymous pages left is Kata's swap-only
	// mode (200).
	var swappiness uint64
	switch {
	case cold.file == 0:
		swappiness = 200
	case cold.anon > 0:
		swappiness = min(divRound(200*cold.anon, cold.anon+cold.file), uint64(cfg.SwappinessMax))
	}
	// swappiness= matters only with swap to use: it keeps anonymous pages
	// out, or caps their share. A kernel without it reclaims by its own
	// vm.swappiness, which is acceptable only when swap was asked for.
	withArg := haveSwap
	if withArg && m.noSwappiness {
		if !cfg.Swap {
			m.log.Debug("mem-agent: the kernel cannot keep anonymous pages out of memory.reclaim; cgroup left alone", "cgroup", dir)
			return
		}
		withArg = false
	}

	target := cold.file + cold.anon
	stall := newStall(filepath.Join(dir, "memory.pressure"), filepath.Join(dir, "io.pressure"))
	if _, err := stall.percent(m.now()); err != nil {
		return
	}
	var done uint64
	stop := "done"
	for done < target {
		if ctx.Err() != nil {
			stop = "agent stopping"
			break
		}
		n := min(uint64(reclaimStep), target-done)
		err := m.reclaim(dir, n, swappiness, withArg)
		if withArg && errors.Is(err, unix.EINVAL) {
			m.noSwappiness = true
			m.log.Info("mem-agent: the kernel's memory.reclaim takes no swappiness; reclaiming by vm.swappiness when swap is asked for")
			if !cfg.Swap {
				stop = "anonymous pages cannot be kept out"
				break
			}
			withArg = false
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			stop = "nothing more to reclaim"
			break
		}
		if err != nil {
			m.log.Warn("mem-agent: reclaim failed", "cgroup", dir, "err", err)
			stop = "error"
			break
		}
		done += n
		pct, err := stall.percent(m.now())
		if err != nil {
			stop = "no stall reading"
			break
		}
		if pct > uint64(cfg.EvictionPSIPercentLimit) {
			stop = fmt.Sprintf("stall %d%% over the limit", pct)
			break
		}
	}
	m.log.Info("mem-agent: reclaimed cold memory", "cgroup", dir, "bytes", done, "cold_bytes", target, "swappiness", swappiness, "stop", stop)
}

// writeReclaim asks the kernel to reclaim n bytes from the cgroup. EAGAIN
// means it could not.
func writeReclaim(dir string, n, swappiness uint64, withArg bool) error {
	arg := strconv.FormatUint(n, 10)
	if withArg {
		arg += " swappiness=" + strconv.FormatUint(swappiness, 10)
	}
	f, err := os.OpenFile(filepath.Join(dir, "memory.reclaim"), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(arg)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// inactive reads a cgroup's inactive LRU sizes from its memory.stat.
func inactive(dir string) (lru, error) {
	var l lru
	found := 0
	err := scanKeyValues(filepath.Join(dir, "memory.stat"), func(key string, v uint64) {
		switch key {
		case "inactive_file":
			l.file, found = v, found+1
		case "inactive_anon":
			l.anon, found = v, found+1
		}
	})
	if err == nil && found < 2 {
		err = fmt.Errorf("%s/memory.stat: no inactive_file or inactive_anon", dir)
	}
	return l, err
}

// swapPages is the guest's free swap in pages; 0 when it cannot be read.
func (m *memcg) swapPages() uint64 {
	kb, err := meminfoKB(m.meminfo, "SwapFree")
	if err != nil {
		return 0
	}
	return kb * 1024 / uint64(syscall.Getpagesize())
}

// meminfoKB reads one field of /proc/meminfo, in kB.
func meminfoKB(name, field string) (uint64, error) {
	var v uint64
	found := false
	err := scanKeyValues(name, func(key string, n uint64) {
		if key == field+":" {
			v, found = n, true
		}
	})
	if err == nil && !found {
		err = fmt.Errorf("%s: no %s", name, field)
	}
	return v, err
}

// scanKeyValues calls fn with the first two fields of each line whose
// second field is a number ("inactive_file 4096", "MemFree: 100 kB").
func scanKeyValues(name string, fn func(key string, v uint64)) error {
	data, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) < 2 {
			continue
		}
		if n, err := strconv.ParseUint(string(f[1]), 10, 64); err == nil {
			fn(string(f[0]), n)
		}
	}
	return sc.Err()
}

// divRound is a/b rounded to the nearest integer, as Kata rounds.
func divRound(a, b uint64) uint64 {
	q, r := a/b, a%b
	if r >= b-r {
		q++
	}
	return q
}
