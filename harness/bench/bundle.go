package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/wren-vm/wren/internal/testbundle"
)

// Bundle is a busybox root filesystem with OCI bundles around it: the same
// rootfs and the same spec serve Wren and the peers.
type Bundle struct {
	Dir    string
	Rootfs string
}

// NewBundle lays out a busybox rootfs under dir.
func NewBundle(dir string) (*Bundle, error) {
	if _, err := os.Stat(testbundle.Busybox); err != nil {
		return nil, fmt.Errorf("busybox-static is needed for the container figures: %w", err)
	}
	d, err := os.MkdirTemp(dir, "bundle-")
	if err != nil {
		return nil, err
	}
	b := &Bundle{Dir: d, Rootfs: filepath.Join(d, "rootfs")}
	if err := testbundle.BusyboxRootfs(b.Rootfs); err != nil {
		return nil, fmt.Errorf("bundle rootfs: %w", err)
	}
	return b, nil
}

// Remove deletes the bundle's files.
func (b *Bundle) Remove() { os.RemoveAll(b.Dir) }

// Spec is `runc spec`'s template for the rootfs (namespaces pid, network,
// ipc, uts, mount; the usual /proc, /dev, /sys mounts, masked and
// read-only paths; a read-only root), running args without a terminal and
// without ambient capabilities (libcontainer cannot raise them without
// inheritable ones).
func (b *Bundle) Spec(args ...string) *specs.Spec {
	caps := []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
	return &specs.Spec{
		Version: "1.0.2", // what crun 1.8.1 and runc 1.1.5 accept
		Root:    &specs.Root{Path: b.Rootfs, Readonly: true},
		Process: &specs.Process{
			Args: args,
			Env:  []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"},
			Cwd:  "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
			NoNewPrivileges: true,
		},
		Hostname: "bench",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
		},
		Linux: &specs.Linux{
			Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}},
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
			},
			MaskedPaths: []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
}

// WriteBundle writes <Dir>/<name>/config.json for the spec and returns the
// bundle directory, for runc and crun.
func (b *Bundle) WriteBundle(name string, spec *specs.Spec) (string, error) {
	dir := filepath.Join(b.Dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	js, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return "", err
	}
	return dir, os.WriteFile(filepath.Join(dir, "config.json"), js, 0o644)
}

// sharedBundle makes the run's bundle on first use.
func (r *Runner) sharedBundle() (*Bundle, error) {
	if r.bundle != nil {
		return r.bundle, nil
	}
	b, err := NewBundle(r.S.WorkDir)
	if err != nil {
		return nil, err
	}
	r.bundle = b
	return b, nil
}
