// Package testbundle lays out container root filesystems made from
// busybox-static, and runtime specs to run them, for tests that start real
// containers.
package testbundle

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/wren-vm/wren/agent/reaper"
	"github.com/wren-vm/wren/internal/testroot"
)

// Busybox is where Debian's busybox-static installs the binary.
const Busybox = "/bin/busybox"

// applets are the busybox commands linked into /bin. A fixed list rather
// than `busybox --list`: tests run a child reaper, and a child the test binary
// waits for itself would race with it.
var applets = strings.Fields(`sh ash cat cp dd echo env false grep head hostname id kill ls mkdir mount
	printf ps pwd read rm sed seq sha256sum sleep stty sync tail tee test touch tr true uname wc yes [`)

// Rootfs creates a busybox root filesystem in dir (created if needed) and
// returns dir. The test is skipped when busybox-static is not installed.
func Rootfs(t testing.TB, dir string) string {
	t.Helper()
	if _, err := os.Stat(Busybox); err != nil {
		t.Skipf("busybox-static not installed: %v", err)
	}
	if err := BusyboxRootfs(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// RootfsWith is Rootfs with the busybox binary at busybox (e.g. another
// architecture's, from ForeignBusybox); "" means the host's.
func RootfsWith(t testing.TB, dir, busybox string) string {
	t.Helper()
	if busybox == "" {
		return Rootfs(t, dir)
	}
	if err := busyboxRootfs(dir, busybox); err != nil {
		t.Fatal(err)
	}
	return dir
}

// BusyboxRootfs lays out a busybox root filesystem in dir (created if
// needed): the binary, its applets as symlinks, and the few /etc files
// programs look for.
func BusyboxRootfs(dir string) error { return busyboxRootfs(dir, Busybox) }

func busyboxRootfs(dir, busybox string) error {
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := copyFile(busybox, filepath.Join(dir, "bin", "busybox")); err != nil {
		return fmt.Errorf("copy busybox: %w", err)
	}
	for _, applet := range applets {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", applet)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	files := map[string]string{
		"etc/passwd":      "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"etc/group":       "root:x:0:\nnogroup:x:65534:\n",
		"etc/hostname":    "busybox\n",
		"etc/resolv.conf": "",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Spec returns runc's default spec (`runc spec`) for the rootfs at root,
// running args without a terminal, with a writable root.
func Spec(root string, args ...string) *specs.Spec {
	s := specconv.Example()
	s.Root.Path = root
	s.Root.Readonly = false
	s.Process.Terminal = false
	s.Process.Args = args
	s.Process.Env = []string{"PATH=/bin", "HOME=/root"}
	s.Hostname = "wren-test"
	return s
}

// RemoveCgroupParent removes the (empty) cgroup directories named parent,
// and everything below them, in every hierarchy; tests put their containers'
// cgroups under one such parent.
func RemoveCgroupParent(parent string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + parent)
	if top := filepath.Join("/sys/fs/cgroup", parent); dirExists(top) {
		roots = append(roots, top)
	}
	for _, root := range roots {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			os.Remove(dirs[i])
		}
	}
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// ContainerMain is the TestMain of a package whose tests start real
// containers. initHook (libcontainer's init re-exec entry) runs first, as
// the test binary is also the containers' init. Without root the package
// is skipped. Otherwise shared receives the one reaper and the cgroup
// parent (prefix-<pid>, removed after the tests) that all tests use, and
// the tests run.
func ContainerMain(m *testing.M, initHook func(), prefix string, shared func(r *reaper.Reaper, cgroupParent string)) {
	initHook()
	testroot.Main(prefix + " tests")
	r, err := reaper.New(nil)
	if err != nil {
		panic(err)
	}
	parent := fmt.Sprintf("%s-%d", prefix, os.Getpid())
	shared(r, parent)
	code := m.Run()
	RemoveCgroupParent(parent)
	os.Exit(code)
}

// CgroupDirs are the directories a container's cgroups would have on this
// host, in every v1 hierarchy and in the v2 tree.
func CgroupDirs(parent, id string) []string {
	var out []string
	for _, ctrl := range []string{"memory", "pids", "freezer", "cpu", "cpuacct", "cpuset", "blkio", "devices", "unified", "systemd", ""} {
		out = append(out, filepath.Join("/sys/fs/cgroup", ctrl, parent, id))
	}
	return out
}
