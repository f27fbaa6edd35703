package container

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/opencontainers/cgroups"

	"github.com/wren-vm/wren/agent/stdio"
)

// The guest uses cgroup v2, this host hybrid v1. This test runs a subset of
// the container tests again in a private mount namespace whose
// /sys/fs/cgroup is the host's cgroup2 hierarchy, so the v2 code paths
// (v2 manager, cgroup.freeze, cgroup.kill, cgroup namespace) run for real.
// Only controllers the host leaves to v2 are available there, so resource
// limits are not part of the subset.
func TestUnderCgroupV2(t *testing.T) {
	if os.Getenv("WREN_CGROUP2_CHILD") != "" || cgroups.IsCgroup2UnifiedMode() {
		t.Skip("already on cgroup v2; the other tests cover it")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare not installed")
	}
	script := `umount -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec "$0" -test.run "$1" -test.count=1 -test.v`
	tests := []string{"TestRunToExitWithOutput", "TestExecWithAndWithoutTTY", "TestPauseResume", "TestKillAll", "TestCgroupNamespaceOnV2"}
	subset := "^(" + strings.Join(tests, "|") + ")$"
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script, os.Args[0], subset)
	cmd.Env = append(os.Environ(), "WREN_CGROUP2_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("container tests under cgroup v2: %v\n%s", err, out)
	}
	for _, name := range tests {
		if !strings.Contains(string(out), "--- PASS: "+name+" ") {
			t.Errorf("%s did not pass under cgroup v2:\n%s", name, out)
		}
	}
}

// On cgroup v2 every container gets its own cgroup namespace: it sees
// itself at the root of the hierarchy.
func TestCgroupNamespaceOnV2(t *testing.T) {
	if !cgroups.IsCgroup2UnifiedMode() {
		t.Skip("cgroup v1 host (see TestUnderCgroupV2)")
	}
	f := newFixture(t)
	c, _ := f.run("/bin/cat", "/proc/self/cgroup")
	got := readAll(t, c, "", stdio.Stdout)
	// Without its own namespace the v2 line would read 0::/<parent>/<id>.
	// (On a hybrid host the v1 lines also show the namespace root.)
	if !strings.Contains(got, "0::/\n") {
		t.Errorf("/proc/self/cgroup in the container: %q, want the v2 entry 0::/", got)
	}
	for _, line := range strings.Split(strings.TrimSpace(got), "\n") {
		if !strings.HasSuffix(line, ":/") {
			t.Errorf("container sees a cgroup path outside its namespace: %q", line)
		}
	}
	if got := wait(t, c, ""); got != 0 {
		t.Errorf("exit %d", got)
	}
}
