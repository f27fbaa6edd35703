package testagent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/internal/testroot"
)

// A shielded directory is an overlay in the agent's mount namespace: what
// is changed through the agent's view stays off the host. The shielded
// directory here is the test's own, so that even a broken shield harms
// nothing.
func TestShieldKeepsChangesOffTheHost(t *testing.T) {
	testroot.Require(t, "mount namespaces")
	dir := filepath.Join(t.TempDir(), "guarded")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kept"), []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := StartWith(t, Options{Shield: []string{dir}})

	mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", a.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	overlay := false
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir && strings.Contains(l, " - overlay ") {
			overlay = true
		}
	}
	if !overlay {
		t.Fatalf("no overlay at %s in the agent's mount namespace:\n%s", dir, mi)
	}
	if mine, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mine), " "+dir+" ") {
		t.Fatalf("the shield's overlay is visible on the host")
	}

	guest := a.GuestPath(dir)
	if b, err := os.ReadFile(filepath.Join(guest, "kept")); err != nil || string(b) != "host" {
		t.Fatalf("the agent does not see the host's content: %q %v", b, err)
	}
	if err := unix.Chmod(guest, 0o4777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(guest, "new"), []byte("agent"), 0o644); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(guest, &st); err != nil || st.Mode&0o7777 != 0o4777 {
		t.Fatalf("the agent's view did not change: mode %o %v", st.Mode&0o7777, err)
	}
	if err := unix.Stat(dir, &st); err != nil || st.Mode&0o7777 != 0o755 {
		t.Fatalf("host directory changed: mode %o %v", st.Mode&0o7777, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file made in the agent's view reached the host: %v", err)
	}
}
