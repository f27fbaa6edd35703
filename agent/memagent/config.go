package memagent

import (
	"math"
	"time"

	"github.com/wren-vm/wren/agent/errdefs"
)

// MemcgConfig tunes the reclaim of cold memory from each container's
// memory cgroup. The fields are Kata's (MemAgentMemcgConfig), in Kata's
// units.
type MemcgConfig struct {
	// Disabled stops the reclaim; the compaction is tuned apart.
	Disabled bool
	// Swap lets reclaim take cold anonymous pages too, when the guest
	// has swap; without it only the page cache is reclaimed.
	Swap bool
	// SwappinessMax caps the share of anonymous pages in a reclaim, on
	// the kernel's swappiness scale (0 to 200).
	SwappinessMax uint32
	// PeriodSecs is the time between two runs.
	PeriodSecs uint64
	// PeriodPSIPercentLimit skips a cgroup for a run when its memory and
	// IO stall time over the past period exceeded this share: a cgroup
	// that is short of memory has no cold memory to give.
	PeriodPSIPercentLimit uint32
	// EvictionPSIPercentLimit stops a cgroup's reclaim as soon as the
	// stall time it causes exceeds this share.
	EvictionPSIPercentLimit uint32
	// EvictionRunAgingCountMin is how many runs must have seen a cgroup
	// before its first reclaim: cold memory is memory that has stayed
	// unused across runs, and a new cgroup has not been watched yet.
	EvictionRunAgingCountMin uint64
}

// CompactConfig tunes the periodic memory compaction. The fields are
// Kata's (MemAgentCompactConfig), in Kata's units.
type CompactConfig struct {
	// Disabled stops the compaction; the reclaim is tuned apart.
	Disabled bool
	// PeriodSecs is the time between two runs.
	PeriodSecs uint64
	// PeriodPSIPercentLimit skips a run when the guest's memory and IO
	// stall time over the past period exceeded this share.
	PeriodPSIPercentLimit uint32
	// CompactPSIPercentLimit stops a compaction as soon as the stall time
	// since it began exceeds this share.
	CompactPSIPercentLimit uint32
	// CompactSecMax stops a compaction that has run this long; 0 stops
	// it at the first check.
	CompactSecMax int64
	// CompactOrder is the page order compaction is for: free movable
	// pages in blocks below this order are the fragments it gathers.
	CompactOrder uint32
	// CompactThreshold, in pages, is how much fragmentation justifies a
	// run: more fragmented free pages than after the last compaction, or
	// that much less free memory than then.
	CompactThreshold uint64
	// CompactForceTimes forces a compaction after this many runs in a
	// row that did not compact, whatever the fragmentation; 0 compacts
	// every run and math.MaxUint64 never forces.
	CompactForceTimes uint64
}

// pageReportingOrder is the order of the blocks free page reporting (the
// balloon's way of giving freed guest memory back to the host) reports on
// x86 and arm64 with 4 KiB pages, so Kata's default target of compaction.
const pageReportingOrder = 9

// DefaultMemcg is Kata's mem-agent default for the reclaim.
func DefaultMemcg() MemcgConfig {
	return MemcgConfig{
		SwappinessMax:            50,
		PeriodSecs:               10 * 60,
		PeriodPSIPercentLimit:    1,
		EvictionPSIPercentLimit:  1,
		EvictionRunAgingCountMin: 3,
	}
}

// DefaultCompact is Kata's mem-agent default for the compaction (the
// code's: Kata's how-to gives 180 for compact_sec_max, its code 1800).
func DefaultCompact() CompactConfig {
	return CompactConfig{
		PeriodSecs:             10 * 60,
		PeriodPSIPercentLimit:  1,
		CompactPSIPercentLimit: 5,
		CompactSecMax:          30 * 60,
		CompactOrder:           pageReportingOrder,
		CompactThreshold:       2 << pageReportingOrder,
		CompactForceTimes:      math.MaxUint64,
	}
}

// MemcgUpdate changes some of a MemcgConfig: a nil field keeps its value,
// as Kata's optional fields do.
type MemcgUpdate struct {
	Disabled                 *bool
	Swap                     *bool
	SwappinessMax            *uint32
	PeriodSecs               *uint64
	PeriodPSIPercentLimit    *uint32
	EvictionPSIPercentLimit  *uint32
	EvictionRunAgingCountMin *uint64
}

// CompactUpdate changes some of a CompactConfig: a nil field keeps its
// value, as Kata's optional fields do.
type CompactUpdate struct {
	Disabled               *bool
	PeriodSecs             *uint64
	PeriodPSIPercentLimit  *uint32
	CompactPSIPercentLimit *uint32
	CompactSecMax          *int64
	CompactOrder           *uint32
	CompactThreshold       *uint64
	CompactForceTimes      *uint64
}

// Limits of the values With accepts. Kata keeps the percentages, the
// swappiness and the order in a u8 and truncates what does not fit; here
// a value that cannot mean what it says is refused instead.
const (
	// maxPercent: the limits are shares of time, of memory and IO stall
	// time together, so a limit of 100 already means "never stop".
	maxPercent = 100
	// maxSwappiness is the top of the kernel's swappiness scale.
	maxSwappiness = 200
	// maxSecs is the longest period a time.Duration holds.
	maxSecs = uint64(math.MaxInt64 / int64(time.Second))
	// maxOrder: blocks of order 16 and up (256 MiB with 4 KiB pages) are
	// beyond any free list the kernel keeps (its largest order is 10 on
	// x86 and on arm64 with 4 KiB pages).
	maxOrder = 15
)

// With returns c changed by u. A value that cannot mean what it says is
// an error of kind ErrInvalidArgument naming the field, and c comes back
// unchanged: an update applies whole or not at all.
func (c MemcgConfig) With(u MemcgUpdate) (MemcgConfig, error) {
	orig := c
	set(&c.Disabled, u.Disabled)
	set(&c.Swap, u.Swap)
	set(&c.SwappinessMax, u.SwappinessMax)
	set(&c.PeriodSecs, u.PeriodSecs)
	set(&c.PeriodPSIPercentLimit, u.PeriodPSIPercentLimit)
	set(&c.EvictionPSIPercentLimit, u.EvictionPSIPercentLimit)
	set(&c.EvictionRunAgingCountMin, u.EvictionRunAgingCountMin)
	switch {
	case c.SwappinessMax > maxSwappiness:
		return orig, invalid("swappiness_max", c.SwappinessMax, "the kernel's swappiness goes from 0 to 200")
	case c.PeriodSecs == 0 || c.PeriodSecs > maxSecs:
		return orig, invalid("period_secs", c.PeriodSecs, "want from 1 to %d seconds", maxSecs)
	case c.PeriodPSIPercentLimit > maxPercent:
		return orig, invalid("period_psi_percent_limit", c.PeriodPSIPercentLimit, "not a percentage")
	case c.EvictionPSIPercentLimit > maxPercent:
		return orig, invalid("eviction_psi_percent_limit", c.EvictionPSIPercentLimit, "not a percentage")
	}
	return c, nil
}

// With returns c changed by u. A value that cannot mean what it says is
// an error of kind ErrInvalidArgument naming the field, and c comes back
// unchanged: an update applies whole or not at all.
func (c CompactConfig) With(u CompactUpdate) (CompactConfig, error) {
	orig := c
	set(&c.Disabled, u.Disabled)
	set(&c.PeriodSecs, u.PeriodSecs)
	set(&c.PeriodPSIPercentLimit, u.PeriodPSIPercentLimit)
	set(&c.CompactPSIPercentLimit, u.CompactPSIPercentLimit)
	set(&c.CompactSecMax, u.CompactSecMax)
	set(&c.CompactOrder, u.CompactOrder)
	set(&c.CompactThreshold, u.CompactThreshold)
	set(&c.CompactForceTimes, u.CompactForceTimes)
	switch {
	case c.PeriodSecs == 0 || c.PeriodSecs > maxSecs:
		return orig, invalid("period_secs", c.PeriodSecs, "want from 1 to %d seconds", maxSecs)
	case c.PeriodPSIPercentLimit > maxPercent:
		return orig, invalid("period_psi_percent_limit", c.PeriodPSIPercentLimit, "not a percentage")
	case c.CompactPSIPercentLimit > maxPercent:
		return orig, invalid("compact_psi_percent_limit", c.CompactPSIPercentLimit, "not a percentage")
	case c.CompactSecMax < 0 || uint64(c.CompactSecMax) > maxSecs:
		return orig, invalid("compact_sec_max", c.CompactSecMax, "want from 0 to %d seconds", maxSecs)
	case c.CompactOrder > maxOrder:
		return orig, invalid("compact_order", c.CompactOrder, "want a page order from 0 to %d", maxOrder)
	}
	return c, nil
}

func (c MemcgConfig) period() time.Duration   { return time.Duration(c.PeriodSecs) * time.Second }
func (c CompactConfig) period() time.Duration { return time.Duration(c.PeriodSecs) * time.Second }

func set[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

func invalid(field string, value any, why string, a ...any) error {
	return errdefs.Errorf(errdefs.ErrInvalidArgument, "mem-agent %s %v: "+why, append([]any{field, value}, a...)...)
}
