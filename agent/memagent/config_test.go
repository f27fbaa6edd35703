package memagent

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/wren-vm/wren/agent/errdefs"
)

func ptr[T any](v T) *T { return &v }

// TestDefaultsAreKatas: the starting tuning is Kata's mem-agent's
// (src/mem-agent/src/memcg.rs and compact.rs, Config::default).
func TestDefaultsAreKatas(t *testing.T) {
	if got, want := DefaultMemcg(), (MemcgConfig{
		SwappinessMax: 50, PeriodSecs: 600, PeriodPSIPercentLimit: 1, EvictionPSIPercentLimit: 1, EvictionRunAgingCountMin: 3,
	}); got != want {
		t.Errorf("DefaultMemcg() = %+v, want %+v", got, want)
	}
	if got, want := DefaultCompact(), (CompactConfig{
		PeriodSecs: 600, PeriodPSIPercentLimit: 1, CompactPSIPercentLimit: 5, CompactSecMax: 1800,
		CompactOrder: 9, CompactThreshold: 1024, CompactForceTimes: math.MaxUint64,
	}); got != want {
		t.Errorf("DefaultCompact() = %+v, want %+v", got, want)
	}
}

// TestWithKeepsWhatIsUnset: an update sets the fields it has and leaves
// the others as they were, as Kata's optional fields do.
func TestWithKeepsWhatIsUnset(t *testing.T) {
	m, err := DefaultMemcg().With(MemcgUpdate{Swap: ptr(true), PeriodSecs: ptr[uint64](120)})
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultMemcg()
	want.Swap, want.PeriodSecs = true, 120
	if m != want {
		t.Errorf("memcg: %+v, want %+v", m, want)
	}
	if m, err = m.With(MemcgUpdate{}); err != nil || m != want {
		t.Errorf("empty update: %+v, %v", m, err)
	}
	if m, err = m.With(MemcgUpdate{Disabled: ptr(true), Swap: ptr(false)}); err != nil || !m.Disabled || m.Swap || m.PeriodSecs != 120 {
		t.Errorf("second update: %+v, %v", m, err)
	}

	c, err := DefaultCompact().With(CompactUpdate{CompactOrder: ptr[uint32](10), CompactForceTimes: ptr[uint64](0), CompactSecMax: ptr[int64](0)})
	if err != nil {
		t.Fatal(err)
	}
	wantC := DefaultCompact()
	wantC.CompactOrder, wantC.CompactForceTimes, wantC.CompactSecMax = 10, 0, 0
	if c != wantC {
		t.Errorf("compact: %+v, want %+v", c, wantC)
	}
}

// TestWithRefusesWhatCannotMeanWhatItSays: values Kata would truncate or
// that would spin the loop are ErrInvalidArgument naming the field, and
// the update applies not at all, not even its valid fields.
func TestWithRefusesWhatCannotMeanWhatItSays(t *testing.T) {
	memcg := []struct {
		field string
		u     MemcgUpdate
	}{
		{"swappiness_max", MemcgUpdate{SwappinessMax: ptr[uint32](201)}},
		{"period_secs", MemcgUpdate{PeriodSecs: ptr[uint64](0)}},
		{"period_secs", MemcgUpdate{PeriodSecs: ptr[uint64](math.MaxUint64)}},
		{"period_psi_percent_limit", MemcgUpdate{PeriodPSIPercentLimit: ptr[uint32](101)}},
		{"eviction_psi_percent_limit", MemcgUpdate{EvictionPSIPercentLimit: ptr[uint32](256)}},
	}
	for _, tt := range memcg {
		tt.u.Swap = ptr(true)
		got, err := DefaultMemcg().With(tt.u)
		checkInvalid(t, err, tt.field)
		if got != DefaultMemcg() {
			t.Errorf("%s: the refused update changed the config: %+v", tt.field, got)
		}
	}
	compact := []struct {
		field string
		u     CompactUpdate
	}{
		{"period_secs", CompactUpdate{PeriodSecs: ptr[uint64](0)}},
		{"period_secs", CompactUpdate{PeriodSecs: ptr(maxSecs + 1)}},
		{"period_psi_percent_limit", CompactUpdate{PeriodPSIPercentLimit: ptr[uint32](1000)}},
		{"compact_psi_percent_limit", CompactUpdate{CompactPSIPercentLimit: ptr[uint32](101)}},
		{"compact_sec_max", CompactUpdate{CompactSecMax: ptr[int64](-1)}},
		{"compact_sec_max", CompactUpdate{CompactSecMax: ptr[int64](math.MaxInt64)}},
		{"compact_order", CompactUpdate{CompactOrder: ptr[uint32](16)}},
	}
	for _, tt := range compact {
		tt.u.Disabled = ptr(true)
		got, err := DefaultCompact().With(tt.u)
		checkInvalid(t, err, tt.field)
		if got != DefaultCompact() {
			t.Errorf("%s: the refused update changed the config: %+v", tt.field, got)
		}
	}
	// The edges that are allowed.
	if _, err := DefaultMemcg().With(MemcgUpdate{SwappinessMax: ptr[uint32](200), PeriodSecs: ptr(maxSecs), EvictionPSIPercentLimit: ptr[uint32](100)}); err != nil {
		t.Error(err)
	}
	if _, err := DefaultCompact().With(CompactUpdate{CompactOrder: ptr[uint32](15), CompactSecMax: ptr(int64(maxSecs)), CompactThreshold: ptr[uint64](math.MaxUint64)}); err != nil {
		t.Error(err)
	}
}

func checkInvalid(t *testing.T, err error, field string) {
	t.Helper()
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), field) {
		t.Errorf("%s: %v, want an invalid argument naming the field", field, err)
	}
}
