package safetemp

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/internal/testroot"
)

// recorder catches the cleanup's errors instead of failing this test.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) { r.errs = append(r.errs, format) }
func (r *recorder) Helper()                           {}

// A test that forgets a bind mount of a precious directory in its temp
// dir: the cleanup reports it, and the bind source survives.
func TestCleanupSurvivesLeftoverBind(t *testing.T) {
	testroot.Require(t, "mounting")
	precious := t.TempDir()
	if err := os.WriteFile(filepath.Join(precious, "null"), []byte("device"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "wren-safetemp-")
	if err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "rootfs", "dev")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(precious, mnt, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	r := &recorder{TB: t}
	cleanup(r, dir)
	if len(r.errs) == 0 || !strings.Contains(r.errs[0], "still mounted") {
		t.Errorf("cleanup did not report the leftover mount: %q", r.errs)
	}
	if b, err := os.ReadFile(filepath.Join(precious, "null")); err != nil || string(b) != "device" {
		t.Errorf("bind source damaged: %q, %v", b, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("temp dir not removed: %v", err)
	}
}
