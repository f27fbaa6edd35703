// Package hotplug onlines hot-added CPUs and memory blocks and drives the
// memory probe interface, for OnlineCPUMem, MemHotplugByProbe and
// GetGuestDetails.
package hotplug

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/wren-vm/wren/agent/errdefs"
)

// Kata retries CPU onlining this often, since a hot-added CPU shows up in
// sysfs a little after the ACPI event.
const (
	cpuRetries  = 100
	cpuInterval = 50 * time.Millisecond
)

// System is the guest's /sys/devices/system.
type System struct{ root string }

// New returns a System below sysfsRoot ("" means /sys).
func New(sysfsRoot string) *System {
	if sysfsRoot == "" {
		sysfsRoot = "/sys"
	}
	return &System{root: filepath.Join(sysfsRoot, "devices/system")}
}

// MemBlockSize reads the memory block size, the hotplug granularity.
func (s *System) MemBlockSize() (uint64, error) {
	b, err := os.ReadFile(filepath.Join(s.root, "memory/block_size_bytes"))
	if err != nil {
		return 0, fmt.Errorf("memory block size: %w", err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 16, 64)
	if err != nil {
		return 0, fmt.Errorf("memory block size %q: %w", b, err)
	}
	return v, nil
}

// ProbeSupported reports whether memory can be added through the probe file.
func (s *System) ProbeSupported() bool {
	_, err := os.Stat(filepath.Join(s.root, "memory/probe"))
	return err == nil
}

// Probe tells the kernel about hot-added memory at each physical address.
func (s *System) Probe(addrs []uint64) error {
	if !s.ProbeSupported() {
		return errdefs.New(errdefs.ErrFailedPrecondition, "the guest kernel has no memory probe interface")
	}
	p := filepath.Join(s.root, "memory/probe")
	for _, a := range addrs {
		if err := os.WriteFile(p, []byte(fmt.Sprintf("%#x", a)), 0); err != nil {
			return fmt.Errorf("probe memory at %#x: %w", a, err)
		}
	}
	return nil
}

// onlineAll writes 1 to every offline <kind>N/online and counts them.
func (s *System) onlineAll(kind string, max int) (int, error) {
	entries, err := filepath.Glob(filepath.Join(s.root, kind, kind+"[0-9]*", "online"))
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, p := range entries {
		if max > 0 && n >= max {
			break
		}
		b, err := os.ReadFile(p)
		if err != nil || strings.TrimSpace(string(b)) != "0" {
			continue
		}
		if err := os.WriteFile(p, []byte("1"), 0); err != nil {
			errs = append(errs, fmt.Errorf("online %s: %w", filepath.Base(filepath.Dir(p)), err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// OnlineMemory onlines every offline memory block.
func (s *System) OnlineMemory() (int, error) { return s.onlineAll("memory", 0) }

// OnlineCPUs onlines nbCPUs offline CPUs, waiting for hot-added ones to
// appear; 0 onlines whatever is offline now.
func (s *System) OnlineCPUs(ctx context.Context, nbCPUs uint32) (int, error) {
	if nbCPUs == 0 {
		return s.onlineAll("cpu", 0)
	}
	done := 0
	for i := 0; i < cpuRetries; i++ {
		n, err := s.onlineAll("cpu", int(nbCPUs)-done)
		done += n
		if done >= int(nbCPUs) {
			return done, nil
		}
		if err != nil && n == 0 && i > 0 {
			return done, err
		}
		select {
		case <-ctx.Done():
			return done, ctx.Err()
		case <-time.After(cpuInterval):
		}
	}
	return done, errdefs.Errorf(errdefs.ErrDeadlineExceeded, "onlined %d of %d CPUs", done, nbCPUs)
}

// Online onlines every offline memory block unless r.CPUOnly, then r.CPUs
// CPUs (see OnlineCPUs), and returns how many CPUs came online.
func (s *System) Online(ctx context.Context, r Request) (int, error) {
	if !r.CPUOnly {
		if _, err := s.OnlineMemory(); err != nil {
			return 0, err
		}
	}
	if r.CPUs == 0 {
		return 0, nil
	}
	return s.OnlineCPUs(ctx, r.CPUs)
}
