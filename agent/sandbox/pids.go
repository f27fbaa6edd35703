package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// The sandbox's pids ceiling is the pids.max of the cgroup parent, which
// holds every container (cgroupPath). Without it a fork bomb in one
// container takes every pid the guest has: the agent then cannot start an
// exec or a container (runc's init fails with EAGAIN), nor much else.
//
// Two margins keep work possible while a container runs away:
//   - between the guest's limits and the ceiling, for what runs outside
//     the pod: the agent's own threads, the kernel's, and an exec's or a
//     container's init before it joins its cgroup;
//   - between the ceiling and the limit a container gets when its spec
//     sets none, for the rest of the pod: an exec into another container,
//     or a new container, is charged to the pod too, so a single container
//     must not be able to fill it.
const (
	// guestReserveMin is the least left outside the pod. The agent's and
	// the kernel's needs have a floor that does not shrink with a small
	// guest, whose threads-max (set from its memory) is small.
	guestReserveMin = 512
	// execHeadroomMin is the least of the pod kept from any one container
	// without a limit of its own: an exec or a container start briefly
	// takes a dozen or so tasks (runc's init stages, then its Go
	// runtime's threads), and a couple may run at once.
	execHeadroomMin = 32
)

// DerivePidsMax returns the sandbox's pids ceiling for a guest whose
// kernel allows pidMax pids (kernel.pid_max) and threadsMax tasks
// (kernel.threads-max): an eighth of the smaller is reserved for the
// guest outside the pod (what runs there grows with the guest's CPUs and
// memory, as threads-max does), and at least guestReserveMin, but never
// more than half.
func DerivePidsMax(pidMax, threadsMax int64) int64 {
	limit := min(pidMax, threadsMax)
	reserve := min(max(limit/8, guestReserveMin), limit/2)
	return limit - reserve
}

// containerPidsMax is the pids limit of a container whose spec sets none:
// the ceiling less an eighth of it (at least execHeadroomMin) for the
// rest of the pod.
func containerPidsMax(ceiling int64) int64 {
	return ceiling - max(ceiling/8, execHeadroomMin)
}

// guestPidsMax derives the ceiling from this kernel's limits.
func guestPidsMax() (int64, error) {
	var v [2]int64
	for i, name := range []string{"pid_max", "threads-max"} {
		b, err := os.ReadFile("/proc/sys/kernel/" + name)
		if err != nil {
			return 0, err
		}
		if v[i], err = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err != nil || v[i] <= 0 {
			return 0, fmt.Errorf("kernel.%s: %q is not a count", name, b)
		}
	}
	return DerivePidsMax(v[0], v[1]), nil
}

// setParentPidsMax creates the cgroup parent (in every hierarchy on v1)
// and sets its pids.max, through the cgroup library that places the
// containers below it.
func setParentPidsMax(parent string, ceiling int64) error {
	res := &cgroups.Resources{PidsLimit: &ceiling, SkipDevices: true}
	m, err := manager.New(&cgroups.Cgroup{Path: "/" + parent, Resources: res})
	if err != nil {
		return err
	}
	// -1: create the cgroup and put no process in it.
	if err := m.Apply(-1); err != nil {
		return err
	}
	return m.Set(res)
}

// limitPids gives a spec that sets no pids limit (none, or "max") the
// default one.
func limitPids(spec *specs.Spec, limit int64) {
	if spec.Linux.Resources == nil {
		spec.Linux.Resources = &specs.LinuxResources{}
	}
	r := spec.Linux.Resources
	if r.Pids == nil {
		r.Pids = &specs.LinuxPids{}
	}
	if r.Pids.Limit == nil || *r.Pids.Limit <= 0 {
		r.Pids.Limit = &limit
	}
}

// removeCgroupParent removes the cgroup parent CreateSandbox made, in every
// hierarchy, once its containers are gone: a stopped agent leaves no
// cgroup behind. rmdir removes only an empty cgroup, so a parent that
// other agents share, or that still holds a container that did not go,
// stays; that is logged, not an error.
func (s *Sandbox) removeCgroupParent() {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", s.opts.CgroupParent))
	dirs = append(dirs, filepath.Join("/sys/fs/cgroup", s.opts.CgroupParent))
	for _, d := range dirs {
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Debug("cgroup parent stays", "dir", d, "err", err)
		}
	}
}
