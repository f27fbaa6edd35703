// Package leakcheck lets tests assert that an operation left nothing behind
// in the test process: no goroutine, open file descriptor, mount, child
// process or cgroup directory that was not there before.
package leakcheck

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Snapshot is the state to compare against.
type Snapshot struct {
	goroutines int
	fds        []string
	mounts     []string
	children   []string
}

// Take records the current state.
func Take(t testing.TB) Snapshot {
	t.Helper()
	runtime.GC() // finalizers close pidfds of dropped os.Process values
	return Snapshot{goroutines: runtime.NumGoroutine(), fds: fds(t), mounts: mounts(t), children: Children()}
}

// Check fails the test if descriptors, mounts or children were added since
// the snapshot, or if any of the given cgroup directories exists. Exits and
// descriptor closes are asynchronous, so it retries for a while first.
func (s Snapshot) Check(t testing.TB, cgroupDirs ...string) {
	t.Helper()
	var problems []string
	for deadline := time.Now().Add(10 * time.Second); ; {
		runtime.GC()
		problems = problems[:0]
		if n := runtime.NumGoroutine(); n > s.goroutines {
			problems = append(problems, fmt.Sprintf("goroutines: %d, before %d", n, s.goroutines))
		}
		if d := added(s.fds, fds(t)); len(d) > 0 {
			problems = append(problems, fmt.Sprintf("fds: %v", d))
		}
		if d := added(s.mounts, mounts(t)); len(d) > 0 {
			problems = append(problems, fmt.Sprintf("mounts: %v", d))
		}
		if d := added(s.children, Children()); len(d) > 0 {
			problems = append(problems, fmt.Sprintf("children: %v", d))
		}
		for _, dir := range cgroupDirs {
			if _, err := os.Stat(dir); err == nil {
				problems = append(problems, "cgroup: "+dir)
			}
		}
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range problems {
		t.Errorf("left behind: %s", p)
	}
}

func added(before, after []string) []string {
	var out []string
	for _, a := range after {
		if !slices.Contains(before, a) {
			out = append(out, a)
		}
	}
	return out
}

func fds(t testing.TB) []string {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the fd ReadDir itself used
		}
		out = append(out, e.Name()+"->"+target)
	}
	return out
}

func mounts(t testing.TB) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 {
			out = append(out, f[4])
		}
	}
	return out
}

// Children lists "pid:state:comm" of the processes whose parent is this
// process (zombies included).
func Children() []string {
	self := strconv.Itoa(os.Getpid())
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []string
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(s[end+1:])
		if len(f) > 1 && f[1] == self {
			out = append(out, filepath.Base(filepath.Dir(p))+":"+f[0]+":"+s[open+1:end])
		}
	}
	return out
}
