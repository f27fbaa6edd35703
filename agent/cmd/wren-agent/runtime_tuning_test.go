package main

import "testing"

func TestIdleReleaser(t *testing.T) {
	var r idleReleaser
	steps := []struct {
		allocs uint64
		want   bool
		why    string
	}{
		{1000, false, "first sample only sets the baseline"},
		{1000 + 2<<20, false, "busy tick: 2 MiB allocated"},
		{1000 + 4<<20, false, "still busy"},
		{1000 + 4<<20 + 100, true, "quiet after a burst: release"},
		{1000 + 4<<20 + 200, false, "quiet again but nothing new to release"},
		{1000 + 4<<20 + 200 + 100<<10, false, "a small busy tick"},
		{1000 + 4<<20 + 200 + 100<<10 + 10, false, "quiet, but only 100 KiB since the release"},
		{1000 + 4<<20 + 200 + 200<<10, false, "busy tick: 200 KiB pending"},
		{1000 + 4<<20 + 200 + 200<<10 + 60<<10, true, "quiet (60 KiB) and more than 256 KiB pending"},
	}
	for i, s := range steps {
		if got := r.step(s.allocs); got != s.want {
			t.Fatalf("step %d (%s): release = %v, want %v", i, s.why, got, s.want)
		}
	}
}

func TestIdleReleaserCounterReset(t *testing.T) {
	var r idleReleaser
	r.step(10 << 20)
	if r.step(5) {
		t.Fatal("a counter that went backwards must rebase, not release")
	}
	if r.pending != 0 || r.last != 5 {
		t.Fatalf("after rebase: %+v", r)
	}
}
