package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcSample is what /proc says about one process's resources. Sizes are
// in KiB, as the kernel reports them.
type ProcSample struct {
	RSS     int64 `json:"rss_kib"`
	RssAnon int64 `json:"rss_anon_kib"`
	RssFile int64 `json:"rss_file_kib"`
	PSS     int64 `json:"pss_kib"`
	PssAnon int64 `json:"pss_anon_kib"`
	PssFile int64 `json:"pss_file_kib"`
	Threads int64 `json:"threads"`
	FDs     int64 `json:"fds"`
}

// ReadProc samples process pid.
func ReadProc(pid int) (ProcSample, error) {
	var s ProcSample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("read status: %w", err)
	}
	st, err := ParseKeyValues(status)
	if err != nil {
		return s, fmt.Errorf("parse /proc/%d/status: %w", pid, err)
	}
	rollup, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return s, fmt.Errorf("read smaps_rollup: %w", err)
	}
	sm, err := ParseKeyValues(rollup)
	if err != nil {
		return s, fmt.Errorf("parse /proc/%d/smaps_rollup: %w", pid, err)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, fmt.Errorf("count fds: %w", err)
	}
	s = ProcSample{
		RSS: st["VmRSS"], RssAnon: st["RssAnon"], RssFile: st["RssFile"], Threads: st["Threads"],
		PSS: sm["Pss"], PssAnon: sm["Pss_Anon"], PssFile: sm["Pss_File"],
		FDs: int64(len(fds)),
	}
	for _, k := range []string{"VmRSS", "RssAnon", "Threads"} {
		if _, ok := st[k]; !ok {
			return s, fmt.Errorf("/proc/%d/status has no %s", pid, k)
		}
	}
	if _, ok := sm["Pss"]; !ok {
		return s, fmt.Errorf("/proc/%d/smaps_rollup has no Pss", pid)
	}
	return s, nil
}

// ParseKeyValues reads the "Key:   123 kB" lines of /proc/PID/status,
// smaps_rollup or /proc/meminfo into numbers (kB values stay in KiB).
// Lines whose value is not a number (Name, State, the rollup's address
// header) are skipped.
func ParseKeyValues(b []byte) (map[string]int64, error) {
	out := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 || len(fields) > 2 || (len(fields) == 2 && fields[1] != "kB") {
			continue
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue
		}
		out[key] = n
	}
	return out, sc.Err()
}
