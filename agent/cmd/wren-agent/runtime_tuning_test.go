package main

import "testing"

func TestIdleReleaser(t *testing.T) {
	var r idleReleaser
	const base = 1000
	steps := []struct {
		allocs, cycles uint64
		want           bool
		why            string
	}{
		{base, 0, false, "first sample only sets the baseline"},
		{base + 2<<20, 0, false, "busy tick: 2 MiB allocated"},
		{base + 2<<20 + 100, 0, false, "quiet, but no GC ran: releasing would only pay for the first cycle"},
		{base + 6<<20, 1, false, "busy tick with a GC"},
		{base + 6<<20 + 100, 1, true, "quiet after a burst that collected: release"},
		{base + 6<<20 + 200, 2, false, "the release's own cycle does not count"},
		{base + 6<<20 + 300, 3, false, "quiet, a GC ran, but nothing allocated since"},
		{base + 6<<20 + 300 + 100<<10, 3, false, "a small busy tick"},
		{base + 6<<20 + 300 + 200<<10, 4, false, "still busy (200 KiB pending)"},
		{base + 6<<20 + 300 + 300<<10 + 10, 4, false, "busy: 100 KiB this tick"},
		{base + 6<<20 + 300 + 300<<10 + 20, 4, true, "quiet, more than 256 KiB pending, a GC ran"},
	}
	for i, s := range steps {
		if got := r.step(s.allocs, s.cycles); got != s.want {
			t.Fatalf("step %d (%s): release = %v, want %v (state %+v)", i, s.why, got, s.want, r)
		}
	}
}

func TestIdleReleaserCounterReset(t *testing.T) {
	var r idleReleaser
	r.step(10<<20, 5)
	if r.step(5, 6) {
		t.Fatal("a counter that went backwards must rebase, not release")
	}
	if r.pending != 0 || r.last != 5 || r.lastCycles != 6 {
		t.Fatalf("after rebase: %+v", r)
	}
}
