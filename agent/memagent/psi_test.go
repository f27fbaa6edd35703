package memagent

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStallOnThisMachine reads the kernel's own pressure files: the
// machine-wide ones (/proc/pressure) the compaction watches, and those
// of a cgroup made for the test on this machine's cgroup2 mount, which
// the reclaim watches per container.
func TestStallOnThisMachine(t *testing.T) {
	s := newStall("/proc/pressure/memory", "/proc/pressure/io")
	checkStallReads(t, s)

	cg := filepath.Join(cgroup2Mount(t), fmt.Sprintf("wren-memagent-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.Remove(cg); err != nil {
			t.Error(err)
		}
	})
	checkStallReads(t, newStall(filepath.Join(cg, "memory.pressure"), filepath.Join(cg, "io.pressure")))
}

func checkStallReads(t *testing.T, s *stall) {
	t.Helper()
	start := time.Now()
	if pct, err := s.percent(start); err != nil || pct != 0 {
		t.Fatalf("first reading of %v: %d%%, %v; want 0 (nothing to compare with)", s.files, pct, err)
	}
	// The stall is real and not ours to choose; that it reads and is a
	// share of the time is what can be checked.
	if pct, err := s.percent(start.Add(time.Second)); err != nil || pct > 200 {
		t.Fatalf("second reading of %v: %d%%, %v", s.files, pct, err)
	}
}

// cgroup2Mount finds where this machine mounts cgroup v2 (/sys/fs/cgroup
// in the guest; /sys/fs/cgroup/unified on a hybrid host).
func cgroup2Mount(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS ... - FSTYPE SOURCE SUPEROPTS
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if ok && strings.HasPrefix(post, "cgroup2 ") {
			return strings.Fields(pre)[4]
		}
	}
	t.Fatal("no cgroup2 mount on this machine")
	return ""
}

// TestStallPercent: the share is the stall time over the elapsed time,
// of the memory and IO files together, from the second reading on.
func TestStallPercent(t *testing.T) {
	dir := t.TempDir()
	mem, io := filepath.Join(dir, "memory.pressure"), filepath.Join(dir, "io.pressure")
	writePressure(t, mem, 1000)
	writePressure(t, io, 2000)
	s := newStall(mem, io)
	t0 := time.Unix(1000, 0)
	if pct, err := s.percent(t0); err != nil || pct != 0 {
		t.Fatalf("first: %d, %v", pct, err)
	}
	// 0.3 s of memory stall and 0.2 s of IO stall in 2 s: 25%.
	writePressure(t, mem, 301_000)
	writePressure(t, io, 202_000)
	if pct, err := s.percent(t0.Add(2 * time.Second)); err != nil || pct != 25 {
		t.Fatalf("second: %d, %v; want 25", pct, err)
	}
	// No stall since: 0.
	if pct, err := s.percent(t0.Add(3 * time.Second)); err != nil || pct != 0 {
		t.Fatalf("third: %d, %v; want 0", pct, err)
	}
	// Totals that went back (a new cgroup at the same path) are no stall.
	writePressure(t, mem, 5)
	if pct, err := s.percent(t0.Add(4 * time.Second)); err != nil || pct != 0 {
		t.Fatalf("after a reset: %d, %v; want 0", pct, err)
	}
	// A file that cannot be read is an error, and the next reading
	// starts over rather than comparing across the gap.
	if err := os.Remove(io); err != nil {
		t.Fatal(err)
	}
	if _, err := s.percent(t0.Add(5 * time.Second)); err == nil {
		t.Fatal("reading without io.pressure succeeded")
	}
	writePressure(t, io, 900_000_000)
	if pct, err := s.percent(t0.Add(6 * time.Second)); err != nil || pct != 0 {
		t.Fatalf("after the gap: %d, %v; want 0", pct, err)
	}
}

func TestSomeTotalRejectsMalformed(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{
		"empty":     "",
		"no some":   "full avg10=0.00 avg60=0.00 avg300=0.00 total=1\n",
		"no total":  "some avg10=0.00 avg60=0.00 avg300=0.00\n",
		"bad total": "some avg10=0.00 avg60=0.00 avg300=0.00 total=-1\n",
	} {
		f := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if n, err := someTotal(f); err == nil {
			t.Errorf("%s: %d, want an error", name, n)
		}
	}
}

// writePressure writes a PSI file whose "some" total is total.
func writePressure(t *testing.T, name string, total uint64) {
	t.Helper()
	text := fmt.Sprintf("some avg10=0.00 avg60=0.00 avg300=0.00 total=%d\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=%d\n", total, total/2)
	if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
