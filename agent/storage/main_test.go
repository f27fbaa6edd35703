package storage

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/wren-vm/wren/internal/testroot"
)

// foreignTmp is the machine's temp directory, whose mounts belong to other
// processes (see TestMain); "" outside the re-executed test process.
var foreignTmp = os.Getenv("WREN_TEST_FOREIGN_TMP")

// TestMain runs the package's tests in a private mount namespace of their
// own, so mountinfo comparisons see only this process's mounts (other jobs
// on the machine mount things too) and a crashed test leaves nothing on the
// host. Loop devices are global and are released by each test.
//
// The namespace starts as a copy of the machine's, mounts of other test
// processes under the temp directory included, and those can still vanish
// from the copy: removing a directory unmounts whatever is mounted on it
// in every namespace. So the tests get a temp directory of their own
// (TMPDIR) and mountTable leaves out the rest of the machine's temp
// directory.
func TestMain(m *testing.M) {
	if testroot.Is() && os.Getenv("WREN_TEST_MNTNS") == "" {
		if path, err := exec.LookPath("unshare"); err == nil {
			own, err := os.MkdirTemp("", "wren-storage-test-")
			if err != nil {
				fmt.Fprintln(os.Stderr, "test temp dir:", err)
				os.Exit(1)
			}
			args := append([]string{"--mount", "--propagation", "private", os.Args[0]}, os.Args[1:]...)
			cmd := exec.Command(path, args...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			cmd.Env = append(os.Environ(), "WREN_TEST_MNTNS=1", "TMPDIR="+own, "WREN_TEST_FOREIGN_TMP="+filepath.Clean(os.TempDir()))
			err = cmd.Run()
			os.Remove(own) // the tests' own t.TempDir()s are gone by now
			if err != nil {
				if ee, ok := err.(*exec.ExitError); ok {
					os.Exit(ee.ExitCode())
				}
				fmt.Fprintln(os.Stderr, "re-exec in a mount namespace:", err)
				os.Exit(1)
			}
			os.Exit(0)
		}
	}
	os.Exit(m.Run())
}
