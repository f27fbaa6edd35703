// Package vmfork notices, from inside the guest, that the VM was restored
// from a snapshot or started as a clone of a VM template, and refreshes
// what the guest cannot carry over: its clock.
//
// The signal is the VM generation ID (QEMU's vmgenid device). Linux reseeds
// its random number generator by itself when the ID changes, and says so in
// the kernel log ("crng reseeded due to virtual machine fork"); the kernels
// that announce it with a uevent (NEW_VMGENID=1) came after 6.1, which the
// guests here run, so the kernel log is what the agent follows. The clock
// stopped when the template was saved; QEMU's RTC runs on host time across a
// restore, so the agent steps the system clock to the RTC at once, to the
// second, before any host asks (a Kata host also sends SetGuestDateTime
// with the exact time).
package vmfork

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// ForkMessage is the kernel's log text when the VM generation ID changed
// (drivers/char/random.c, add_vmfork_randomness).
const ForkMessage = "crng reseeded due to virtual machine fork"

// DefaultMinStep is the smallest clock error stepped: the RTC counts whole
// seconds, so a smaller difference is its rounding, not a stale clock.
const DefaultMinStep = 2 * time.Second

// Watcher follows the kernel log for VM generation changes.
type Watcher struct {
	Log *slog.Logger
	// ReadRTC reads the hardware clock; nil reads /dev/rtc0 (UTC).
	ReadRTC func() (time.Time, error)
	// Now is the system clock; nil is time.Now.
	Now func() time.Time
	// SetClock sets the system clock; nil calls settimeofday.
	SetClock func(time.Time) error
	// MinStep is the smallest difference stepped; 0 is DefaultMinStep.
	MinStep time.Duration

	forks atomic.Uint64
}

// Forks is how many VM generation changes the watcher has seen.
func (w *Watcher) Forks() uint64 { return w.forks.Load() }

// Run reads /dev/kmsg from its end (what the kernel logs from now on) and
// handles every fork record, until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	f, err := os.Open("/dev/kmsg")
	if err != nil {
		return fmt.Errorf("vmfork: %w", err)
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return fmt.Errorf("vmfork: seek /dev/kmsg: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	defer f.Close()
	err = w.Follow(f)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Follow reads kmsg records (one per read, "PRIO,SEQ,USEC,FLAGS;TEXT\n"
// then continuation lines) from r until it fails, handling fork records.
func (w *Watcher) Follow(r io.Reader) error {
	br := bufio.NewReaderSize(r, 8192)
	for {
		line, err := br.ReadString('\n')
		if IsFork(line) {
			w.onFork()
		}
		if errors.Is(err, unix.EPIPE) {
			continue // records were overwritten before they were read
		}
		if err != nil {
			return err
		}
	}
}

// IsFork reports whether a kmsg line is the kernel's VM fork record.
func IsFork(line string) bool {
	_, text, ok := strings.Cut(line, ";")
	if !ok {
		return false
	}
	text = strings.TrimSpace(text)
	// printk's pr_fmt prefixes the subsystem ("random: ").
	return strings.HasSuffix(text, ForkMessage)
}

func (w *Watcher) onFork() {
	n := w.forks.Add(1)
	log := w.Log
	if log == nil {
		log = slog.Default()
	}
	log.Info("VM generation changed: restored from a snapshot or cloned from a template; the kernel reseeded its RNG", "forks", n)
	step, err := w.syncClock()
	switch {
	case err != nil:
		log.Warn("clock not refreshed after the VM fork", "err", err)
	case step != 0:
		log.Info("clock stepped to the RTC after the VM fork", "step_ms", step.Milliseconds())
	}
}

// syncClock steps the system clock to the RTC when they differ by at least
// MinStep, and returns the step.
func (w *Watcher) syncClock() (time.Duration, error) {
	read, now, set := w.ReadRTC, w.Now, w.SetClock
	if read == nil {
		read = readRTC
	}
	if now == nil {
		now = time.Now
	}
	if set == nil {
		set = setClock
	}
	minStep := w.MinStep
	if minStep == 0 {
		minStep = DefaultMinStep
	}
	rtc, err := read()
	if err != nil {
		return 0, err
	}
	step := rtc.Sub(now())
	if step < minStep && step > -minStep {
		return 0, nil
	}
	if err := set(rtc); err != nil {
		return 0, err
	}
	return step, nil
}

// readRTC reads /dev/rtc0, which QEMU keeps in UTC.
func readRTC() (time.Time, error) {
	f, err := os.Open("/dev/rtc0")
	if err != nil {
		return time.Time{}, fmt.Errorf("rtc: %w", err)
	}
	defer f.Close()
	t, err := unix.IoctlGetRTCTime(int(f.Fd()))
	if err != nil {
		return time.Time{}, fmt.Errorf("rtc: RTC_RD_TIME: %w", err)
	}
	return time.Date(int(t.Year)+1900, time.Month(t.Mon+1), int(t.Mday), int(t.Hour), int(t.Min), int(t.Sec), 0, time.UTC), nil
}

func setClock(t time.Time) error {
	tv := unix.NsecToTimeval(t.UnixNano())
	if err := unix.Settimeofday(&tv); err != nil {
		return fmt.Errorf("settimeofday: %w", err)
	}
	return nil
}
