package bench

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Machine describes where a run happened.
type Machine struct {
	CPUModel string `json:"cpu_model"`
	Cores    int    `json:"cores"`
	MemoryMB int64  `json:"memory_mib"`
	Kernel   string `json:"kernel"`
	// CgroupMode is "v1", "hybrid" or "v2" as the host mounts cgroups;
	// CgroupView is what the benchmark process saw (it may run in a
	// private mount namespace with the cgroup2 mount removed).
	CgroupMode string `json:"cgroup_mode"`
	CgroupView string `json:"cgroup_view"`
	GoVersion  string `json:"go_version"`
	LoadAvg    string `json:"loadavg_at_start"`
}

// DescribeMachine reads the machine's description from /proc and /sys.
// hostCgroupMode, when not empty, is the host's mode as seen before
// entering a private mount namespace.
func DescribeMachine(hostCgroupMode string) Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), CPUModel: cpuModel()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.MemoryMB = int64(si.Totalram) * int64(si.Unit) >> 20
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	m.CgroupView = CgroupMode()
	m.CgroupMode = hostCgroupMode
	if m.CgroupMode == "" {
		m.CgroupMode = m.CgroupView
	}
	return m
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// CgroupMode tells how cgroups are mounted in this mount namespace: "v2"
// (unified at /sys/fs/cgroup), "hybrid" (v1 controllers plus a cgroup2
// mount, usually /sys/fs/cgroup/unified) or "v1".
func CgroupMode() string {
	var st unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "v2"
	}
	if unix.Statfs("/sys/fs/cgroup/unified", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		return "hybrid"
	}
	return "v1"
}
