package storage

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/wren-vm/wren/internal/testroot"
)

// TestMain runs the package's tests in a private mount namespace of their
// own, so mountinfo comparisons see only this process's mounts (other jobs
// on the machine mount things too) and a crashed test leaves nothing on the
// host. Loop devices are global and are released by each test.
func TestMain(m *testing.M) {
	if testroot.Is() && os.Getenv("WREN_TEST_MNTNS") == "" {
		if path, err := exec.LookPath("unshare"); err == nil {
			args := append([]string{"--mount", "--propagation", "private", os.Args[0]}, os.Args[1:]...)
			cmd := exec.Command(path, args...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
			cmd.Env = append(os.Environ(), "WREN_TEST_MNTNS=1")
			if err := cmd.Run(); err != nil {
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
