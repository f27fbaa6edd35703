package rpc

import (
	"github.com/opencontainers/cgroups"

	"github.com/wren-vm/wren/protocols/agentpb"
)

// statsToProto converts libcontainer's cgroup statistics to Kata's CgroupStats.
func statsToProto(st *cgroups.Stats) *agentpb.CgroupStats {
	cpu := st.CpuStats
	mem := st.MemoryStats
	out := &agentpb.CgroupStats{
		CpuStats: &agentpb.CpuStats{
			CpuUsage: &agentpb.CpuUsage{
				TotalUsage:        cpu.CpuUsage.TotalUsage,
				PercpuUsage:       cpu.CpuUsage.PercpuUsage,
				UsageInKernelmode: cpu.CpuUsage.UsageInKernelmode,
				UsageInUsermode:   cpu.CpuUsage.UsageInUsermode,
			},
			ThrottlingData: &agentpb.ThrottlingData{
				Periods:          cpu.ThrottlingData.Periods,
				ThrottledPeriods: cpu.ThrottlingData.ThrottledPeriods,
				ThrottledTime:    cpu.ThrottlingData.ThrottledTime,
			},
		},
		MemoryStats: &agentpb.MemoryStats{
			Cache:        mem.Cache,
			Usage:        memData(mem.Usage),
			SwapUsage:    memData(mem.SwapUsage),
			KernelUsage:  memData(mem.KernelUsage),
			UseHierarchy: mem.UseHierarchy,
			Stats:        mem.Stats,
		},
		PidsStats: &agentpb.PidsStats{Current: st.PidsStats.Current, Limit: st.PidsStats.Limit},
		BlkioStats: &agentpb.BlkioStats{
			IoServiceBytesRecursive: blkio(st.BlkioStats.IoServiceBytesRecursive),
			IoServicedRecursive:     blkio(st.BlkioStats.IoServicedRecursive),
			IoQueuedRecursive:       blkio(st.BlkioStats.IoQueuedRecursive),
			IoServiceTimeRecursive:  blkio(st.BlkioStats.IoServiceTimeRecursive),
			IoWaitTimeRecursive:     blkio(st.BlkioStats.IoWaitTimeRecursive),
			IoMergedRecursive:       blkio(st.BlkioStats.IoMergedRecursive),
			IoTimeRecursive:         blkio(st.BlkioStats.IoTimeRecursive),
			SectorsRecursive:        blkio(st.BlkioStats.SectorsRecursive),
		},
	}
	if len(st.HugetlbStats) > 0 {
		out.HugetlbStats = make(map[string]*agentpb.HugetlbStats, len(st.HugetlbStats))
		for size, h := range st.HugetlbStats {
			out.HugetlbStats[size] = &agentpb.HugetlbStats{Usage: h.Usage, MaxUsage: h.MaxUsage, Failcnt: h.Failcnt}
		}
	}
	return out
}

func memData(d cgroups.MemoryData) *agentpb.MemoryData {
	return &agentpb.MemoryData{Usage: d.Usage, MaxUsage: d.MaxUsage, Failcnt: d.Failcnt, Limit: d.Limit}
}

func blkio(es []cgroups.BlkioStatEntry) []*agentpb.BlkioStatsEntry {
	var out []*agentpb.BlkioStatsEntry
	for _, e := range es {
		out = append(out, &agentpb.BlkioStatsEntry{Major: e.Major, Minor: e.Minor, Op: e.Op, Value: e.Value})
	}
	return out
}
