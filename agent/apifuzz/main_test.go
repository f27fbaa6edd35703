package apifuzz

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/container"
	"github.com/wren-vm/wren/agent/reaper"
	"github.com/wren-vm/wren/internal/testbundle"
	"github.com/wren-vm/wren/internal/testroot"
)

// confinedEnv marks the re-executed test process.
const confinedEnv = "WREN_APIFUZZ_CONFINED"

var (
	testReaper   *reaper.Reaper
	cgroupParent string
)

func TestMain(m *testing.M) {
	container.InitHook()
	testroot.Main("the agent API fuzz")
	if os.Getenv(confinedEnv) == "" {
		os.Exit(reexecConfined())
	}
	// Mounts made from here on must not propagate back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		fmt.Fprintf(os.Stderr, "make / private: %v\n", err)
		os.Exit(1)
	}
	r, err := reaper.New(nil)
	if err != nil {
		panic(err)
	}
	testReaper = r
	cgroupParent = fmt.Sprintf("wren-fuzz-%d", os.Getpid())
	code := m.Run()
	testbundle.RemoveCgroupParent(cgroupParent)
	os.Exit(code)
}

// reexecConfined runs this test binary again, with the same arguments and
// descriptors (go test -fuzz talks to its workers over inherited fds), in
// new mount and network namespaces, and returns its exit code.
func reexecConfined() int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), confinedEnv+"=1")
	cmd.ExtraFiles = inheritedFiles()
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET,
		Pdeathsig:  syscall.SIGKILL,
	}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintf(os.Stderr, "re-exec in private namespaces: %v\n", err)
		return 1
	}
	return 0
}

// inheritedFiles lists descriptors 3..max of this process at their own
// numbers; gaps are filled with /dev/null.
func inheritedFiles() []*os.File {
	entries, _ := os.ReadDir("/proc/self/fd")
	maxFD := 2
	open := map[int]bool{}
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n < 3 {
			continue
		}
		// Skip the directory ReadDir itself holds open.
		if target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); target == "/proc/"+strconv.Itoa(os.Getpid())+"/fd" {
			continue
		}
		open[n] = true
		maxFD = max(maxFD, n)
	}
	var files []*os.File
	for n := 3; n <= maxFD; n++ {
		if open[n] {
			files = append(files, os.NewFile(uintptr(n), "fd"+strconv.Itoa(n)))
			continue
		}
		null, _ := os.Open(os.DevNull)
		files = append(files, null)
	}
	return files
}

// setup is shared by the fuzz target and its tests.
func setupRootfs(t testing.TB) string {
	t.Helper()
	return testbundle.Rootfs(t, filepath.Join(t.TempDir(), "rootfs"))
}
