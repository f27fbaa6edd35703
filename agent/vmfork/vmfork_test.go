package vmfork

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestIsFork(t *testing.T) {
	for line, want := range map[string]bool{
		"5,1234,6203671,-;random: crng reseeded due to virtual machine fork\n": true,
		"5,1234,6203671,-;crng reseeded due to virtual machine fork":           true,
		"6,99,100,-;random: crng init done\n":                                  false,
		" SUBSYSTEM=acpi\n":                                                    false,
		"crng reseeded due to virtual machine fork\n":                          false, // not a kmsg record
		"4,7,8,-;user: echo crng reseeded due to virtual machine fork later\n": false,
	} {
		if got := IsFork(line); got != want {
			t.Errorf("IsFork(%q) = %v, want %v", line, got, want)
		}
	}
}

// fakeClock is a system clock and RTC under the test's control.
type fakeClock struct {
	now, rtc time.Time
	rtcErr   error
	set      []time.Time
}

func (c *fakeClock) watcher(log *bytes.Buffer) *Watcher {
	return &Watcher{
		Log:      slog.New(slog.NewTextHandler(log, nil)),
		ReadRTC:  func() (time.Time, error) { return c.rtc, c.rtcErr },
		Now:      func() time.Time { return c.now },
		SetClock: func(t time.Time) error { c.set = append(c.set, t); return nil },
	}
}

// A fork record among others steps a clock left behind to the RTC, once
// per record; other records do nothing.
func TestFollowStepsClockOnFork(t *testing.T) {
	saved := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	c := &fakeClock{now: saved, rtc: saved.Add(90 * time.Second)}
	var log bytes.Buffer
	w := c.watcher(&log)
	kmsg := "6,1,10,-;pci 0000:05:00.0: BAR 1 assigned\n" +
		" SUBSYSTEM=pci\n" +
		"5,2,20,-;random: crng reseeded due to virtual machine fork\n" +
		"6,3,30,-;virtio-pci 0000:05:00.0: enabling device\n"
	if err := w.Follow(strings.NewReader(kmsg)); !errors.Is(err, io.EOF) {
		t.Fatalf("Follow: %v", err)
	}
	if w.Forks() != 1 || len(c.set) != 1 || !c.set[0].Equal(c.rtc) {
		t.Fatalf("forks %d, clock set to %v; want 1 fork, the clock set once to %v", w.Forks(), c.set, c.rtc)
	}
	if !strings.Contains(log.String(), "step_ms=90000") {
		t.Errorf("log lacks the step:\n%s", log.String())
	}
}

// A clock within the RTC's rounding is left alone; an unreadable RTC is
// logged and the fork still counted.
func TestForkClockLeftAlone(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 700_000_000, time.UTC)
	c := &fakeClock{now: now, rtc: now.Truncate(time.Second)}
	var log bytes.Buffer
	w := c.watcher(&log)
	rec := "5,2,20,-;random: crng reseeded due to virtual machine fork\n"
	_ = w.Follow(strings.NewReader(rec))
	if len(c.set) != 0 {
		t.Errorf("clock set to %v for a %v difference", c.set, now.Sub(c.rtc))
	}
	c.rtcErr = errors.New("no rtc")
	_ = w.Follow(strings.NewReader(rec))
	if w.Forks() != 2 || len(c.set) != 0 || !strings.Contains(log.String(), "no rtc") {
		t.Errorf("forks %d, set %v, log:\n%s", w.Forks(), c.set, log.String())
	}
}

// A record the kernel overwrote before it was read (EPIPE) does not end
// the watch.
func TestFollowSurvivesEPIPE(t *testing.T) {
	c := &fakeClock{now: time.Unix(1000, 0), rtc: time.Unix(2000, 0)}
	var log bytes.Buffer
	w := c.watcher(&log)
	r := &scripted{reads: []any{unix.EPIPE, "5,2,20,-;random: crng reseeded due to virtual machine fork\n"}}
	if err := w.Follow(r); !errors.Is(err, io.EOF) {
		t.Fatalf("Follow: %v", err)
	}
	if w.Forks() != 1 {
		t.Errorf("forks %d after an EPIPE then a fork record", w.Forks())
	}
}

// scripted returns its reads in order (a string or an error), then EOF.
type scripted struct{ reads []any }

func (s *scripted) Read(p []byte) (int, error) {
	if len(s.reads) == 0 {
		return 0, io.EOF
	}
	r := s.reads[0]
	s.reads = s.reads[1:]
	if err, ok := r.(error); ok {
		return 0, err
	}
	return copy(p, r.(string)), nil
}
