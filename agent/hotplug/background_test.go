package hotplug

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// A burst of background requests while one run is stuck costs no
// goroutine each: they merge into one next run, which onlines what they
// all asked for.
func TestBackgroundRunsOneAtATimeAndMerges(t *testing.T) {
	s, sys := fakeSystem(t)
	const burst = 40
	for i := 4; i <= burst+1; i++ { // cpu1..cpu(burst+1) offline
		p := filepath.Join(sys, "devices/system/cpu", fmt.Sprintf("cpu%d", i), "online")
		writeFile(t, p, "0\n", 0o644)
	}
	var (
		mu             sync.Mutex
		runs           []Request
		inFlight, most int
	)
	entered := make(chan struct{}, 1)
	gate := make(chan struct{})
	b := NewBackground(nil, time.Minute, func(ctx context.Context, r Request) error {
		mu.Lock()
		runs = append(runs, r)
		inFlight++
		most = max(most, inFlight)
		first := len(runs) == 1
		mu.Unlock()
		defer func() { mu.Lock(); inFlight--; mu.Unlock() }()
		if first {
			entered <- struct{}{}
			<-gate
		}
		_, err := s.Online(ctx, r)
		return err
	})

	b.Schedule(Request{CPUs: 1, CPUOnly: true})
	<-entered
	goroutines := runtime.NumGoroutine()
	for i := 0; i < burst; i++ {
		b.Schedule(Request{CPUs: 1, CPUOnly: i != 7}) // one of them wants memory too
	}
	if n := runtime.NumGoroutine(); n > goroutines+2 {
		t.Fatalf("%d background requests started %d goroutines", burst, n-goroutines)
	}
	close(gate)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Wait(ctx); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	if most != 1 {
		t.Errorf("%d runs at once", most)
	}
	want := []Request{{CPUs: 1, CPUOnly: true}, {CPUs: burst, CPUOnly: false}}
	if len(runs) != 2 || runs[0] != want[0] || runs[1] != want[1] {
		t.Fatalf("runs %+v, want %+v", runs, want)
	}
	for i := 1; i <= burst+1; i++ {
		if got := read(t, sys, fmt.Sprintf("cpu/cpu%d/online", i)); got != "1" {
			t.Errorf("cpu%d online = %q", i, got)
		}
	}
	if got := read(t, sys, "memory/memory7/online"); got != "1" {
		t.Errorf("memory7 online = %q (the merged run asked for memory)", got)
	}
}

// Once idle, the next request starts a new run; a panicking run is
// survived and does not wedge the queue.
func TestBackgroundRestartsAfterIdleAndSurvivesPanic(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	b := NewBackground(nil, time.Minute, func(ctx context.Context, r Request) error {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			panic("boom")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 2; i++ {
		b.Schedule(Request{CPUs: 1})
		if err := b.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 2 {
		t.Fatalf("%d runs, want 2", calls)
	}
}

func TestRequestMergeSaturates(t *testing.T) {
	r := Request{CPUs: 1 << 31, CPUOnly: true}.merge(Request{CPUs: 1 << 31, CPUOnly: true})
	if r.CPUs != 1<<32-1 || !r.CPUOnly {
		t.Fatalf("merged %+v", r)
	}
}
