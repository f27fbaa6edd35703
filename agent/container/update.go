package container

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var errEOF = io.EOF

// MinMemoryLimit is the least memory limit, and memory+swap limit, Update
// accepts. runc and libcontainer set no fixed floor: on cgroup v1 the
// kernel refuses a limit below the current usage (EBUSY), while on v2
// memory.max takes any value and the kernel OOM-kills the container,
// unless the caller asks runc to refuse a limit at or below the current
// usage (linux.resources.memory.checkBeforeUpdate, which libcontainer
// checks in cgroups/fs2 CheckMemoryUsage). The floor is dockerd's
// (linuxMinMemory in moby's daemon/daemon_unix.go, 6 MiB, there "to
// account for overhead during startup"): no container process runs in
// less, so a smaller limit is a bad value, not a request to kill.
const MinMemoryLimit = 6 << 20

// Update applies new resource limits to the container's cgroup. Fields left
// unset (zero or nil) in r keep their current value, as `runc update` does.
func (c *Container) Update(ctx context.Context, r *specs.LinuxResources) error {
	if r == nil {
		return fmt.Errorf("%w: no resources", ErrInvalid)
	}
	c.opMu.Lock()
	defer c.opMu.Unlock()
	cfg := c.lc.Config()
	// specconv does the unit conversions (v1 shares to v2 weight and so on)
	// for a cgroup made only of the new values.
	fresh, err := specconv.CreateCgroupConfig(&specconv.CreateOpts{
		CgroupName: c.id,
		Spec:       &specs.Spec{Linux: &specs.Linux{CgroupsPath: cfg.Cgroups.Path, Resources: r}},
	}, nil)
	if err != nil {
		return fmt.Errorf("%w: resources: %v", ErrInvalid, err)
	}
	// Work on a copy: libcontainer keeps pointers into its config, and a
	// failed Set must leave it unchanged.
	cg := *cfg.Cgroups
	res := *cg.Resources
	cg.Resources = &res
	cfg.Cgroups = &cg
	n, cur := fresh.Resources, cg.Resources
	// -1 is "unlimited", 0 "unchanged".
	if n.Memory > 0 && n.Memory < MinMemoryLimit {
		return fmt.Errorf("%w: memory limit %d bytes is below the %d a container needs", ErrInvalid, n.Memory, MinMemoryLimit)
	}
	if n.MemorySwap > 0 && n.MemorySwap < MinMemoryLimit {
		return fmt.Errorf("%w: memory+swap limit %d bytes is below the %d a container needs", ErrInvalid, n.MemorySwap, MinMemoryLimit)
	}
	setI := func(dst *int64, v int64) {
		if v != 0 {
			*dst = v
		}
	}
	setU := func(dst *uint64, v uint64) {
		if v != 0 {
			*dst = v
		}
	}
	setI(&cur.Memory, n.Memory)
	setI(&cur.MemoryReservation, n.MemoryReservation)
	setI(&cur.MemorySwap, n.MemorySwap)
	if n.MemorySwappiness != nil {
		cur.MemorySwappiness = n.MemorySwappiness
	}
	setU(&cur.CpuShares, n.CpuShares)
	setU(&cur.CpuWeight, n.CpuWeight)
	setI(&cur.CpuQuota, n.CpuQuota)
	setU(&cur.CpuPeriod, n.CpuPeriod)
	setI(&cur.CpuRtRuntime, n.CpuRtRuntime)
	setU(&cur.CpuRtPeriod, n.CpuRtPeriod)
	if n.CpuBurst != nil {
		cur.CpuBurst = n.CpuBurst
	}
	if n.CpusetCpus != "" {
		cur.CpusetCpus = n.CpusetCpus
	}
	if n.CpusetMems != "" {
		cur.CpusetMems = n.CpusetMems
	}
	if n.PidsLimit != nil {
		cur.PidsLimit = n.PidsLimit
	}
	if n.BlkioWeight != 0 {
		cur.BlkioWeight = n.BlkioWeight
	}
	if len(n.HugetlbLimit) > 0 {
		cur.HugetlbLimit = n.HugetlbLimit
	}
	for k, v := range n.Unified {
		if cur.Unified == nil {
			cur.Unified = map[string]string{}
		}
		cur.Unified[k] = v
	}
	// Devices are not updatable through this path (as with runc update).
	cur.SkipDevices = true
	defer func() { cur.SkipDevices = false }()
	if err := c.lc.Set(cfg); err != nil {
		if errors.Is(err, libcontainer.ErrNotRunning) {
			return fmt.Errorf("update %s: its init has exited: %w", c.id, ErrState)
		}
		return fmt.Errorf("update %s: %w", c.id, err)
	}
	return nil
}

// ReapplyResources writes the container's current cgroup settings again
// (after CPU hotplug, cpusets must be rewritten to include new CPUs).
func (c *Container) ReapplyResources(ctx context.Context) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	cfg := c.lc.Config()
	cg := *cfg.Cgroups
	res := *cg.Resources
	res.SkipDevices = true // device rules did not change
	cg.Resources = &res
	cfg.Cgroups = &cg
	if err := c.lc.Set(cfg); err != nil {
		return fmt.Errorf("reapply resources of %s: %w", c.id, err)
	}
	res.SkipDevices = false
	return nil
}
