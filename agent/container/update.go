package container

import (
	"context"
	"fmt"
	"io"

	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var errEOF = io.EOF

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
		return fmt.Errorf("update %s: %w", c.id, err)
	}
	return nil
}
