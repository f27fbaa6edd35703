package container

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/wren-vm/wren/internal/testbundle"
)

// BenchmarkLifecycle times the phases of one container running /bin/true,
// in-process (no RPC): Create (spec conversion, cgroups, init re-exec up to
// the exec fifo), Start (fifo release until the init has exec'd), Wait and
// Destroy. Per-phase medians are reported as extra metrics; figure 5 of
// `make bench` is the same work over the API.
func BenchmarkLifecycle(b *testing.B) {
	root := testbundle.Rootfs(b, filepath.Join(b.TempDir(), "rootfs"))
	state := filepath.Join(b.TempDir(), "lc")
	ctx := context.Background()
	var phases [4][]time.Duration
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("bench%d", seq.Add(1))
		s := testbundle.Spec(root, "/bin/true")
		s.Linux.CgroupsPath = "/" + cgroupParent + "/" + id
		t0 := time.Now()
		c, err := Create(ctx, Config{ID: id, Spec: s, StateDir: state, Reaper: testReaper, NoPivotRoot: RootIsInitramfs()})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := c.Start(ctx); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if code, err := c.Wait(ctx, id); err != nil || code != 0 {
			b.Fatalf("wait: %d, %v", code, err)
		}
		t3 := time.Now()
		if err := c.Destroy(ctx); err != nil {
			b.Fatal(err)
		}
		t4 := time.Now()
		for j, d := range []time.Duration{t1.Sub(t0), t2.Sub(t1), t3.Sub(t2), t4.Sub(t3)} {
			phases[j] = append(phases[j], d)
		}
	}
	for j, name := range []string{"create", "start", "wait", "destroy"} {
		b.ReportMetric(float64(medianOf(phases[j]).Microseconds())/1000, name+"-ms")
	}
}

// BenchmarkExec times Exec+Wait of /bin/true in a running container
// (figure 6 without the RPC), and reports Exec's own share.
func BenchmarkExec(b *testing.B) {
	root := testbundle.Rootfs(b, filepath.Join(b.TempDir(), "rootfs"))
	ctx := context.Background()
	id := fmt.Sprintf("bench%d", seq.Add(1))
	s := testbundle.Spec(root, "/bin/sleep", "1000000")
	s.Linux.CgroupsPath = "/" + cgroupParent + "/" + id
	c, err := Create(ctx, Config{ID: id, Spec: s, StateDir: filepath.Join(b.TempDir(), "lc"), Reaper: testReaper, NoPivotRoot: RootIsInitramfs()})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := c.Destroy(ctx); err != nil {
			b.Error(err)
		}
	}()
	if err := c.Start(ctx); err != nil {
		b.Fatal(err)
	}
	proc := testbundle.Spec(root, "/bin/true").Process
	var starts []time.Duration // ExecProcess's share: until the process runs
	for i := 0; b.Loop(); i++ {
		execID := fmt.Sprintf("e%d", i)
		t0 := time.Now()
		if _, err := c.Exec(ctx, execID, proc, nil); err != nil {
			b.Fatal(err)
		}
		starts = append(starts, time.Since(t0))
		p, err := c.Process(execID)
		if err != nil {
			b.Fatal(err)
		}
		if code, err := c.Wait(ctx, execID); err != nil || code != 0 {
			b.Fatalf("wait: %d, %v", code, err)
		}
		c.forget(p) // nobody reads its output
	}
	b.ReportMetric(float64(medianOf(starts).Microseconds())/1000, "start-ms")
}

func medianOf(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
