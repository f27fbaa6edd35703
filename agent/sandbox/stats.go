package sandbox

import (
	"github.com/opencontainers/cgroups"

	pb "github.com/wren-vm/wren/protocols/agentpb"
)

func statsToProto(st *cgroups.Stats) *pb.CgroupStats {
	cpu := st.CpuStats
	mem := st.MemoryStats
	out := &pb.CgroupStats{
		CpuStats: &pb.CpuStats{
			CpuUsage: &pb.CpuUsage{
				TotalUsage:        cpu.CpuUsage.TotalUsage,
				PercpuUsage:       cpu.CpuUsage.PercpuUsage,
				UsageInKernelmode: cpu.CpuUsage.UsageInKernelmode,
				UsageInUsermode:   cpu.CpuUsage.UsageInUsermode,
			},
			ThrottlingData: &pb.ThrottlingData{
				Periods:          cpu.ThrottlingData.Periods,
				ThrottledPeriods: cpu.ThrottlingData.ThrottledPeriods,
				ThrottledTime:    cpu.ThrottlingData.ThrottledTime,
			},
		},
		MemoryStats: &pb.MemoryStats{
			Cache:        mem.Cache,
			Usage:        memData(mem.Usage),
			SwapUsage:    memData(mem.SwapUsage),
			KernelUsage:  memData(mem.KernelUsage),
			UseHierarchy: mem.UseHierarchy,
			Stats:        mem.Stats,
		},
		PidsStats: &pb.PidsStats{Current: st.PidsStats.Current, Limit: st.PidsStats.Limit},
		BlkioStats: &pb.BlkioStats{
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
		out.HugetlbStats = make(map[string]*pb.HugetlbStats, len(st.HugetlbStats))
		for size, h := range st.HugetlbStats {
			out.HugetlbStats[size] = &pb.HugetlbStats{Usage: h.Usage, MaxUsage: h.MaxUsage, Failcnt: h.Failcnt}
		}
	}
	return out
}

func memData(d cgroups.MemoryData) *pb.MemoryData {
	return &pb.MemoryData{Usage: d.Usage, MaxUsage: d.MaxUsage, Failcnt: d.Failcnt, Limit: d.Limit}
}

func blkio(es []cgroups.BlkioStatEntry) []*pb.BlkioStatsEntry {
	var out []*pb.BlkioStatsEntry
	for _, e := range es {
		out = append(out, &pb.BlkioStatsEntry{Major: e.Major, Minor: e.Minor, Op: e.Op, Value: e.Value})
	}
	return out
}
