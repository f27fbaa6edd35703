package ocispec

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"

	pb "github.com/wren-vm/wren/protocols/agentpb"
)

// FromSpec converts a runtime-spec Spec into the protobuf form a host sends
// (what Kata's runtime does before CreateContainer). Fields oci.proto lacks
// (e.g. Process.Scheduler, Linux.Personality) are dropped; unset pointers
// become 0 and wildcard device numbers -1. nil gives nil.
func FromSpec(s *specs.Spec) *pb.Spec {
	if s == nil {
		return nil
	}
	out := &pb.Spec{
		Version:     s.Version,
		Process:     FromProcess(s.Process),
		Hostname:    s.Hostname,
		Annotations: copyMap(s.Annotations),
		Linux:       fromLinux(s.Linux),
	}
	if s.Root != nil {
		out.Root = &pb.Root{Path: s.Root.Path, Readonly: s.Root.Readonly}
	}
	for _, m := range s.Mounts {
		out.Mounts = append(out.Mounts, &pb.Mount{Destination: m.Destination, Source: m.Source, Type: m.Type, Options: copyStrings(m.Options)})
	}
	if h := s.Hooks; h != nil {
		out.Hooks = &pb.Hooks{
			Prestart:        fromHooks(h.Prestart), //nolint:staticcheck // still part of the wire API
			CreateRuntime:   fromHooks(h.CreateRuntime),
			CreateContainer: fromHooks(h.CreateContainer),
			StartContainer:  fromHooks(h.StartContainer),
			Poststart:       fromHooks(h.Poststart),
			Poststop:        fromHooks(h.Poststop),
		}
	}
	return out
}

// FromProcess converts a runtime-spec Process. nil gives nil.
func FromProcess(p *specs.Process) *pb.Process {
	if p == nil {
		return nil
	}
	out := &pb.Process{
		Terminal:        p.Terminal,
		User:            &pb.User{UID: p.User.UID, GID: p.User.GID, AdditionalGids: copyU32(p.User.AdditionalGids), Username: p.User.Username},
		Args:            copyStrings(p.Args),
		Env:             copyStrings(p.Env),
		Cwd:             p.Cwd,
		NoNewPrivileges: p.NoNewPrivileges,
		ApparmorProfile: p.ApparmorProfile,
		SelinuxLabel:    p.SelinuxLabel,
	}
	if p.OOMScoreAdj != nil {
		out.OOMScoreAdj = int64(*p.OOMScoreAdj)
	}
	if p.ConsoleSize != nil {
		out.ConsoleSize = &pb.Box{Height: uint32(p.ConsoleSize.Height), Width: uint32(p.ConsoleSize.Width)}
	}
	if c := p.Capabilities; c != nil {
		out.Capabilities = &pb.LinuxCapabilities{
			Bounding: copyStrings(c.Bounding), Effective: copyStrings(c.Effective),
			Inheritable: copyStrings(c.Inheritable), Permitted: copyStrings(c.Permitted), Ambient: copyStrings(c.Ambient),
		}
	}
	for _, r := range p.Rlimits {
		out.Rlimits = append(out.Rlimits, &pb.POSIXRlimit{Type: r.Type, Hard: r.Hard, Soft: r.Soft})
	}
	return out
}

func fromHooks(hs []specs.Hook) []*pb.Hook {
	var out []*pb.Hook
	for _, h := range hs {
		out = append(out, &pb.Hook{Path: h.Path, Args: copyStrings(h.Args), Env: copyStrings(h.Env), Timeout: int64(deref(h.Timeout))})
	}
	return out
}

func fromLinux(l *specs.Linux) *pb.Linux {
	if l == nil {
		return nil
	}
	out := &pb.Linux{
		UIDMappings:       fromIDMaps(l.UIDMappings),
		GIDMappings:       fromIDMaps(l.GIDMappings),
		Sysctl:            copyMap(l.Sysctl),
		Resources:         FromResources(l.Resources),
		CgroupsPath:       l.CgroupsPath,
		RootfsPropagation: l.RootfsPropagation,
		MaskedPaths:       copyStrings(l.MaskedPaths),
		ReadonlyPaths:     copyStrings(l.ReadonlyPaths),
		MountLabel:        l.MountLabel,
	}
	for _, ns := range l.Namespaces {
		out.Namespaces = append(out.Namespaces, &pb.LinuxNamespace{Type: string(ns.Type), Path: ns.Path})
	}
	for _, d := range l.Devices {
		dev := &pb.LinuxDevice{Path: d.Path, Type: d.Type, Major: d.Major, Minor: d.Minor, UID: deref(d.UID), GID: deref(d.GID)}
		if d.FileMode != nil {
			dev.FileMode = uint32(*d.FileMode)
		}
		out.Devices = append(out.Devices, dev)
	}
	if s := l.Seccomp; s != nil {
		sc := &pb.LinuxSeccomp{DefaultAction: string(s.DefaultAction)}
		for _, a := range s.Architectures {
			sc.Architectures = append(sc.Architectures, string(a))
		}
		for _, f := range s.Flags {
			sc.Flags = append(sc.Flags, string(f))
		}
		for _, call := range s.Syscalls {
			c := &pb.LinuxSyscall{Names: copyStrings(call.Names), Action: string(call.Action)}
			if call.ErrnoRet != nil {
				c.ErrnoRet = &pb.LinuxSyscall_Errnoret{Errnoret: uint32(*call.ErrnoRet)}
			}
			for _, a := range call.Args {
				c.Args = append(c.Args, &pb.LinuxSeccompArg{Index: uint64(a.Index), Value: a.Value, ValueTwo: a.ValueTwo, Op: string(a.Op)})
			}
			sc.Syscalls = append(sc.Syscalls, c)
		}
		out.Seccomp = sc
	}
	if l.IntelRdt != nil {
		out.IntelRdt = &pb.LinuxIntelRdt{L3CacheSchema: l.IntelRdt.L3CacheSchema}
	}
	return out
}

func fromIDMaps(ms []specs.LinuxIDMapping) []*pb.LinuxIDMapping {
	var out []*pb.LinuxIDMapping
	for _, m := range ms {
		out = append(out, &pb.LinuxIDMapping{ContainerID: m.ContainerID, HostID: m.HostID, Size: m.Size})
	}
	return out
}

// FromResources converts runtime-spec LinuxResources. nil gives nil.
func FromResources(r *specs.LinuxResources) *pb.LinuxResources {
	if r == nil {
		return nil
	}
	out := &pb.LinuxResources{}
	for _, d := range r.Devices {
		major, minor := int64(-1), int64(-1)
		if d.Major != nil {
			major = *d.Major
		}
		if d.Minor != nil {
			minor = *d.Minor
		}
		out.Devices = append(out.Devices, &pb.LinuxDeviceCgroup{Allow: d.Allow, Type: d.Type, Major: major, Minor: minor, Access: d.Access})
	}
	if m := r.Memory; m != nil {
		out.Memory = &pb.LinuxMemory{
			Limit: deref(m.Limit), Reservation: deref(m.Reservation), Swap: deref(m.Swap),
			Kernel: deref(m.Kernel), KernelTCP: deref(m.KernelTCP), //nolint:staticcheck // still part of the wire API
			Swappiness: deref(m.Swappiness), DisableOOMKiller: deref(m.DisableOOMKiller),
		}
	}
	if c := r.CPU; c != nil {
		out.CPU = &pb.LinuxCPU{
			Shares: deref(c.Shares), Quota: deref(c.Quota), Period: deref(c.Period),
			RealtimeRuntime: deref(c.RealtimeRuntime), RealtimePeriod: deref(c.RealtimePeriod),
			Cpus: c.Cpus, Mems: c.Mems,
		}
	}
	if r.Pids != nil {
		out.Pids = &pb.LinuxPids{Limit: deref(r.Pids.Limit)}
	}
	if b := r.BlockIO; b != nil {
		out.BlockIO = &pb.LinuxBlockIO{
			Weight: uint32(deref(b.Weight)), LeafWeight: uint32(deref(b.LeafWeight)),
			ThrottleReadBpsDevice: fromThrottle(b.ThrottleReadBpsDevice), ThrottleWriteBpsDevice: fromThrottle(b.ThrottleWriteBpsDevice),
			ThrottleReadIOPSDevice: fromThrottle(b.ThrottleReadIOPSDevice), ThrottleWriteIOPSDevice: fromThrottle(b.ThrottleWriteIOPSDevice),
		}
		for _, w := range b.WeightDevice {
			out.BlockIO.WeightDevice = append(out.BlockIO.WeightDevice, &pb.LinuxWeightDevice{
				Major: w.Major, Minor: w.Minor, Weight: uint32(deref(w.Weight)), LeafWeight: uint32(deref(w.LeafWeight)),
			})
		}
	}
	for _, h := range r.HugepageLimits {
		out.HugepageLimits = append(out.HugepageLimits, &pb.LinuxHugepageLimit{Pagesize: h.Pagesize, Limit: h.Limit})
	}
	if n := r.Network; n != nil {
		out.Network = &pb.LinuxNetwork{ClassID: deref(n.ClassID)}
		for _, p := range n.Priorities {
			out.Network.Priorities = append(out.Network.Priorities, &pb.LinuxInterfacePriority{Name: p.Name, Priority: p.Priority})
		}
	}
	return out
}

func fromThrottle(ts []specs.LinuxThrottleDevice) []*pb.LinuxThrottleDevice {
	var out []*pb.LinuxThrottleDevice
	for _, t := range ts {
		out = append(out, &pb.LinuxThrottleDevice{Major: t.Major, Minor: t.Minor, Rate: t.Rate})
	}
	return out
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
