// Package ocispec converts between the protobuf OCI spec of the agent API
// (oci.proto, package grpc) and the runtime-spec Go types that libcontainer
// consumes.
//
// The protobuf messages cannot say "unset" for scalars. Kata's Go runtime
// fills them by a JSON round trip of the runtime spec, so an unset pointer
// arrives as 0; this package therefore maps 0 back to nil for the resource
// and hook fields where 0 is not a meaningful setting (limits, shares,
// weights, timeouts, swappiness, class ids, file modes), and -1 device
// cgroup numbers to nil (wildcard), as the Kata agent does. Ids (uid, gid,
// device numbers, OOMScoreAdj) keep their zero.
package ocispec

import (
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	pb "github.com/wren-vm/wren/protocols/agentpb"
)

// ToSpec converts a protobuf Spec into a runtime-spec Spec. nil gives nil.
func ToSpec(s *pb.Spec) *specs.Spec {
	if s == nil {
		return nil
	}
	out := &specs.Spec{
		Version:     s.GetVersion(),
		Process:     ToProcess(s.GetProcess()),
		Hostname:    s.GetHostname(),
		Annotations: copyMap(s.GetAnnotations()),
		Linux:       toLinux(s.GetLinux()),
	}
	if r := s.GetRoot(); r != nil {
		out.Root = &specs.Root{Path: r.GetPath(), Readonly: r.GetReadonly()}
	}
	for _, m := range s.GetMounts() {
		out.Mounts = append(out.Mounts, specs.Mount{
			Destination: m.GetDestination(),
			Type:        m.GetType(),
			Source:      m.GetSource(),
			Options:     copyStrings(m.GetOptions()),
		})
	}
	if h := s.GetHooks(); h != nil {
		out.Hooks = &specs.Hooks{
			Prestart:        toHooks(h.GetPrestart()), //nolint:staticcheck // still part of the wire API
			CreateRuntime:   toHooks(h.GetCreateRuntime()),
			CreateContainer: toHooks(h.GetCreateContainer()),
			StartContainer:  toHooks(h.GetStartContainer()),
			Poststart:       toHooks(h.GetPoststart()),
			Poststop:        toHooks(h.GetPoststop()),
		}
	}
	return out
}

// ToProcess converts a protobuf Process. nil gives nil.
func ToProcess(p *pb.Process) *specs.Process {
	if p == nil {
		return nil
	}
	oom := int(p.GetOOMScoreAdj())
	out := &specs.Process{
		Terminal:        p.GetTerminal(),
		Args:            copyStrings(p.GetArgs()),
		Env:             copyStrings(p.GetEnv()),
		Cwd:             p.GetCwd(),
		NoNewPrivileges: p.GetNoNewPrivileges(),
		ApparmorProfile: p.GetApparmorProfile(),
		OOMScoreAdj:     &oom,
		SelinuxLabel:    p.GetSelinuxLabel(),
	}
	if b := p.GetConsoleSize(); b != nil {
		out.ConsoleSize = &specs.Box{Height: uint(b.GetHeight()), Width: uint(b.GetWidth())}
	}
	if u := p.GetUser(); u != nil {
		out.User = specs.User{
			UID:            u.GetUID(),
			GID:            u.GetGID(),
			AdditionalGids: copyU32(u.GetAdditionalGids()),
			Username:       u.GetUsername(),
		}
	}
	if c := p.GetCapabilities(); c != nil {
		out.Capabilities = &specs.LinuxCapabilities{
			Bounding:    copyStrings(c.GetBounding()),
			Effective:   copyStrings(c.GetEffective()),
			Inheritable: copyStrings(c.GetInheritable()),
			Permitted:   copyStrings(c.GetPermitted()),
			Ambient:     copyStrings(c.GetAmbient()),
		}
	}
	for _, r := range p.GetRlimits() {
		out.Rlimits = append(out.Rlimits, specs.POSIXRlimit{Type: r.GetType(), Hard: r.GetHard(), Soft: r.GetSoft()})
	}
	return out
}

func toHooks(hs []*pb.Hook) []specs.Hook {
	var out []specs.Hook
	for _, h := range hs {
		out = append(out, specs.Hook{
			Path:    h.GetPath(),
			Args:    copyStrings(h.GetArgs()),
			Env:     copyStrings(h.GetEnv()),
			Timeout: nonZeroInt(int(h.GetTimeout())),
		})
	}
	return out
}

func toLinux(l *pb.Linux) *specs.Linux {
	if l == nil {
		return nil
	}
	out := &specs.Linux{
		UIDMappings:       toIDMaps(l.GetUIDMappings()),
		GIDMappings:       toIDMaps(l.GetGIDMappings()),
		Sysctl:            copyMap(l.GetSysctl()),
		Resources:         ToResources(l.GetResources()),
		CgroupsPath:       l.GetCgroupsPath(),
		RootfsPropagation: l.GetRootfsPropagation(),
		MaskedPaths:       copyStrings(l.GetMaskedPaths()),
		ReadonlyPaths:     copyStrings(l.GetReadonlyPaths()),
		MountLabel:        l.GetMountLabel(),
		Seccomp:           toSeccomp(l.GetSeccomp()),
	}
	for _, ns := range l.GetNamespaces() {
		out.Namespaces = append(out.Namespaces, specs.LinuxNamespace{
			Type: specs.LinuxNamespaceType(ns.GetType()),
			Path: ns.GetPath(),
		})
	}
	for _, d := range l.GetDevices() {
		uid, gid := d.GetUID(), d.GetGID()
		dev := specs.LinuxDevice{
			Path:  d.GetPath(),
			Type:  d.GetType(),
			Major: d.GetMajor(),
			Minor: d.GetMinor(),
			UID:   &uid,
			GID:   &gid,
		}
		if m := d.GetFileMode(); m != 0 {
			mode := os.FileMode(m)
			dev.FileMode = &mode
		}
		out.Devices = append(out.Devices, dev)
	}
	if r := l.GetIntelRdt(); r != nil {
		out.IntelRdt = &specs.LinuxIntelRdt{L3CacheSchema: r.GetL3CacheSchema()}
	}
	return out
}

func toIDMaps(ms []*pb.LinuxIDMapping) []specs.LinuxIDMapping {
	var out []specs.LinuxIDMapping
	for _, m := range ms {
		out = append(out, specs.LinuxIDMapping{ContainerID: m.GetContainerID(), HostID: m.GetHostID(), Size: m.GetSize()})
	}
	return out
}

func toSeccomp(s *pb.LinuxSeccomp) *specs.LinuxSeccomp {
	if s == nil {
		return nil
	}
	out := &specs.LinuxSeccomp{DefaultAction: specs.LinuxSeccompAction(s.GetDefaultAction())}
	for _, a := range s.GetArchitectures() {
		out.Architectures = append(out.Architectures, specs.Arch(a))
	}
	for _, f := range s.GetFlags() {
		out.Flags = append(out.Flags, specs.LinuxSeccompFlag(f))
	}
	for _, sc := range s.GetSyscalls() {
		call := specs.LinuxSyscall{
			Names:  copyStrings(sc.GetNames()),
			Action: specs.LinuxSeccompAction(sc.GetAction()),
		}
		if e, ok := sc.GetErrnoRet().(*pb.LinuxSyscall_Errnoret); ok {
			v := uint(e.Errnoret)
			call.ErrnoRet = &v
		}
		for _, a := range sc.GetArgs() {
			call.Args = append(call.Args, specs.LinuxSeccompArg{
				Index:    uint(a.GetIndex()),
				Value:    a.GetValue(),
				ValueTwo: a.GetValueTwo(),
				Op:       specs.LinuxSeccompOperator(a.GetOp()),
			})
		}
		out.Syscalls = append(out.Syscalls, call)
	}
	return out
}

// ToResources converts protobuf LinuxResources (also used by
// UpdateContainer). nil gives nil.
func ToResources(r *pb.LinuxResources) *specs.LinuxResources {
	if r == nil {
		return nil
	}
	out := &specs.LinuxResources{}
	for _, d := range r.GetDevices() {
		out.Devices = append(out.Devices, specs.LinuxDeviceCgroup{
			Allow:  d.GetAllow(),
			Type:   d.GetType(),
			Major:  notWildcard(d.GetMajor()),
			Minor:  notWildcard(d.GetMinor()),
			Access: d.GetAccess(),
		})
	}
	if m := r.GetMemory(); m != nil {
		out.Memory = &specs.LinuxMemory{
			Limit:       nonZero(m.GetLimit()),
			Reservation: nonZero(m.GetReservation()),
			Swap:        nonZero(m.GetSwap()),
			Kernel:      nonZero(m.GetKernel()), //nolint:staticcheck // still part of the wire API
			KernelTCP:   nonZero(m.GetKernelTCP()),
			Swappiness:  nonZero(m.GetSwappiness()),
		}
		if m.GetDisableOOMKiller() {
			t := true
			out.Memory.DisableOOMKiller = &t
		}
	}
	if c := r.GetCPU(); c != nil {
		out.CPU = &specs.LinuxCPU{
			Shares:          nonZero(c.GetShares()),
			Quota:           nonZero(c.GetQuota()),
			Period:          nonZero(c.GetPeriod()),
			RealtimeRuntime: nonZero(c.GetRealtimeRuntime()),
			RealtimePeriod:  nonZero(c.GetRealtimePeriod()),
			Cpus:            c.GetCpus(),
			Mems:            c.GetMems(),
		}
	}
	if p := r.GetPids(); p != nil {
		out.Pids = &specs.LinuxPids{Limit: nonZero(p.GetLimit())}
	}
	if b := r.GetBlockIO(); b != nil {
		out.BlockIO = &specs.LinuxBlockIO{
			Weight:                  nonZero16(b.GetWeight()),
			LeafWeight:              nonZero16(b.GetLeafWeight()),
			ThrottleReadBpsDevice:   toThrottle(b.GetThrottleReadBpsDevice()),
			ThrottleWriteBpsDevice:  toThrottle(b.GetThrottleWriteBpsDevice()),
			ThrottleReadIOPSDevice:  toThrottle(b.GetThrottleReadIOPSDevice()),
			ThrottleWriteIOPSDevice: toThrottle(b.GetThrottleWriteIOPSDevice()),
		}
		for _, w := range b.GetWeightDevice() {
			wd := specs.LinuxWeightDevice{Weight: nonZero16(w.GetWeight()), LeafWeight: nonZero16(w.GetLeafWeight())}
			wd.Major, wd.Minor = w.GetMajor(), w.GetMinor()
			out.BlockIO.WeightDevice = append(out.BlockIO.WeightDevice, wd)
		}
	}
	for _, h := range r.GetHugepageLimits() {
		out.HugepageLimits = append(out.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.GetPagesize(), Limit: h.GetLimit()})
	}
	if n := r.GetNetwork(); n != nil {
		out.Network = &specs.LinuxNetwork{ClassID: nonZero(n.GetClassID())}
		for _, p := range n.GetPriorities() {
			out.Network.Priorities = append(out.Network.Priorities, specs.LinuxInterfacePriority{Name: p.GetName(), Priority: p.GetPriority()})
		}
	}
	return out
}

func toThrottle(ts []*pb.LinuxThrottleDevice) []specs.LinuxThrottleDevice {
	var out []specs.LinuxThrottleDevice
	for _, t := range ts {
		d := specs.LinuxThrottleDevice{Rate: t.GetRate()}
		d.Major, d.Minor = t.GetMajor(), t.GetMinor()
		out = append(out, d)
	}
	return out
}

func nonZero[T int64 | uint64 | uint32](v T) *T {
	if v == 0 {
		return nil
	}
	return &v
}

func nonZeroInt(v int) *int {
	if v == 0 {
		return nil
	}
	return &v
}

func nonZero16(v uint32) *uint16 {
	if v == 0 {
		return nil
	}
	w := uint16(v)
	return &w
}

func notWildcard(v int64) *int64 {
	if v == -1 {
		return nil
	}
	return &v
}

func copyStrings(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return append([]string(nil), s...)
}

func copyU32(s []uint32) []uint32 {
	if len(s) == 0 {
		return nil
	}
	return append([]uint32(nil), s...)
}

func copyMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
