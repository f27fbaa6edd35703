package rpc

import (
	"testing"

	"github.com/opencontainers/cgroups"
)

func TestStatsToProto(t *testing.T) {
	st := &cgroups.Stats{
		CpuStats:     cgroups.CpuStats{CpuUsage: cgroups.CpuUsage{TotalUsage: 11, PercpuUsage: []uint64{5, 6}}, ThrottlingData: cgroups.ThrottlingData{Periods: 3}},
		MemoryStats:  cgroups.MemoryStats{Cache: 7, Usage: cgroups.MemoryData{Usage: 100, Limit: 200}, Stats: map[string]uint64{"rss": 9}},
		PidsStats:    cgroups.PidsStats{Current: 4, Limit: 99},
		BlkioStats:   cgroups.BlkioStats{IoServiceBytesRecursive: []cgroups.BlkioStatEntry{{Major: 8, Minor: 1, Op: "Read", Value: 512}}},
		HugetlbStats: map[string]cgroups.HugetlbStats{"2MB": {Usage: 2 << 20}},
	}
	cs := statsToProto(st)
	if cs.GetCpuStats().GetCpuUsage().GetTotalUsage() != 11 || len(cs.GetCpuStats().GetCpuUsage().GetPercpuUsage()) != 2 || cs.GetCpuStats().GetThrottlingData().GetPeriods() != 3 {
		t.Errorf("cpu: %v", cs.GetCpuStats())
	}
	if m := cs.GetMemoryStats(); m.GetCache() != 7 || m.GetUsage().GetUsage() != 100 || m.GetUsage().GetLimit() != 200 || m.GetStats()["rss"] != 9 {
		t.Errorf("memory: %v", m)
	}
	if p := cs.GetPidsStats(); p.GetCurrent() != 4 || p.GetLimit() != 99 {
		t.Errorf("pids: %v", p)
	}
	if b := cs.GetBlkioStats().GetIoServiceBytesRecursive(); len(b) != 1 || b[0].GetMajor() != 8 || b[0].GetOp() != "Read" || b[0].GetValue() != 512 {
		t.Errorf("blkio: %v", b)
	}
	if h := cs.GetHugetlbStats()["2MB"]; h.GetUsage() != 2<<20 {
		t.Errorf("hugetlb: %v", cs.GetHugetlbStats())
	}
}
