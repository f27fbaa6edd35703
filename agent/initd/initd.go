// Package initd does the work of a guest's init when the agent runs as
// PID 1: the kernel filesystems, cgroups, the console session, hostname,
// loopback, OOM protection, kernel modules from the image's load list, the
// debug console, the vsock log stream and the power-off path.
//
// Every step logs and carries on where the guest can still be useful
// (a missing cgroup controller, a module that does not load); the agent as
// PID 1 must never exit, because its death is a kernel panic.
package initd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/kmodload"
	"github.com/wren-vm/wren/lib/kmod"
)

// IsPID1 reports whether this process is the guest's init.
func IsPID1() bool { return os.Getpid() == 1 }

// Path is the PATH set for the agent and everything it starts.
const Path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// OOMScoreAdj protects the agent from the OOM killer (Kata's unit file uses
// the same value; its init mode forgets it and the agent gets killed).
const OOMScoreAdj = -997

// Config is what Setup needs.
type Config struct {
	// Root prefixes every path (tests use a scratch root); "" means "/".
	Root string
	// CgroupV1 mounts one v1 hierarchy per controller instead of cgroup2.
	CgroupV1 bool
	// ModuleList is the image's module load list; default kmod.ListPath.
	ModuleList string
	// Hostname, when empty, is the first word of /etc/hostname, else
	// "localhost".
	Hostname string
}

// Setup does the PID 1 work after EarlyMounts and the configuration:
// modules first (before anything waits for a device), then cgroups,
// session and console, PATH, hostname, loopback, subreaper and OOM score.
// It returns the joined errors of the steps that failed; every step is
// attempted.
func Setup(ctx context.Context, log *slog.Logger, cfg Config) error {
	var errs []error
	step := func(name string, fn func() error) {
		start := time.Now()
		if err := fn(); err != nil {
			log.Error("init step failed", "step", name, "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			return
		}
		log.Debug("init step done", "step", name, "ms", time.Since(start).Milliseconds())
	}
	step("modules", func() error { return loadModules(log, cfg) })
	step("cgroups", func() error { return MountCgroups(log, cfg.Root, cfg.CgroupV1) })
	step("console", ConsoleSession)
	step("path", func() error { return os.Setenv("PATH", Path) })
	step("hostname", func() error { return SetHostname(cfg.Root, cfg.Hostname) })
	step("loopback", LoopbackUp)
	step("subreaper", func() error { return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })
	step("oom_score_adj", func() error { return SetOOMScoreAdj(OOMScoreAdj) })
	return errors.Join(errs...)
}

func loadModules(log *slog.Logger, cfg Config) error {
	list := cfg.ModuleList
	if list == "" {
		list = join(cfg.Root, kmod.ListPath)
	}
	if _, err := os.Stat(list); errors.Is(err, os.ErrNotExist) {
		log.Info("no kernel module list", "path", list)
		return nil
	}
	start := time.Now()
	n, err := kmodload.LoadList(list)
	log.Info("kernel modules loaded", "count", n, "ms", time.Since(start).Milliseconds())
	return err
}

// ConsoleSession makes the agent a session leader with the console (its
// stdin) as controlling terminal, so a shell on the console gets job
// control and ^C.
func ConsoleSession() error {
	if _, err := unix.Setsid(); err != nil && !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("setsid: %w", err)
	}
	if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 1); err != nil {
		return fmt.Errorf("TIOCSCTTY on stdin: %w", err)
	}
	return nil
}

// SetHostname sets the hostname from name, else from the first word of
// <root>/etc/hostname, else "localhost".
func SetHostname(root, name string) error {
	if name == "" {
		if b, err := os.ReadFile(join(root, "/etc/hostname")); err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				name = f[0]
			}
		}
	}
	if name == "" {
		name = "localhost"
	}
	if err := unix.Sethostname([]byte(name)); err != nil {
		return fmt.Errorf("sethostname %q: %w", name, err)
	}
	return nil
}

// SetOOMScoreAdj sets this process's oom_score_adj.
func SetOOMScoreAdj(v int) error {
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte(fmt.Sprintf("%d\n", v)), 0); err != nil {
		return fmt.Errorf("oom_score_adj: %w", err)
	}
	return nil
}

// CgroupV1Requested reports whether the kernel command line asks for cgroup
// v1 (systemd.unified_cgroup_hierarchy=0/false/no). cgroup v2 is the
// default, and cgroup_no_v1=all always means v2.
func CgroupV1Requested(cmdline []string) bool {
	v1 := false
	for _, w := range cmdline {
		k, v, _ := strings.Cut(w, "=")
		switch k {
		case "systemd.unified_cgroup_hierarchy":
			v1 = v == "0" || v == "false" || v == "no" || v == "n"
		case "cgroup_no_v1":
			if v == "all" {
				return false
			}
		}
	}
	return v1
}

func join(root, p string) string {
	if root == "" || root == "/" {
		return p
	}
	return strings.TrimSuffix(root, "/") + p
}

// Uptime returns the time since the kernel booted (CLOCK_BOOTTIME, the
// clock of /proc/uptime). As PID 1 the process start time in /proc is the
// kernel's init thread, nearly zero, so the agent's own init time is the
// uptime at listening minus the uptime when main began.
func Uptime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
