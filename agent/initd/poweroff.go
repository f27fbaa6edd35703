package initd

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"time"

	"golang.org/x/sys/unix"
)

// consolePath is written directly on power-off, so the reason reaches the
// serial console even when the log goes to a vsock stream.
var consolePath = "/dev/console"

// PowerOff logs why the guest stops, syncs the filesystems and powers the
// VM off with reboot(RB_POWER_OFF). It never returns when this process is
// PID 1 (returning would panic the kernel); otherwise, where powering off
// is not ours to do, it returns an error and the caller exits.
func PowerOff(log *slog.Logger, reason string) error {
	if log != nil {
		log.Error("powering off", "reason", reason)
	}
	if c, err := os.OpenFile(consolePath, os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
		fmt.Fprintf(c, "wren-agent: powering off: %s\n", reason)
		c.Close()
	}
	if !IsPID1() {
		return fmt.Errorf("not PID 1: not powering off (%s)", reason)
	}
	unix.Sync()
	for {
		err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
		// Only reached if the kernel refused; keep trying rather than
		// return into a kernel panic.
		fmt.Fprintf(os.Stderr, "wren-agent: reboot(POWER_OFF): %v\n", err)
		time.Sleep(time.Second)
	}
}

// Recover is deferred at the top of every long-lived goroutine of the agent:
// as PID 1 a panic is logged with its value and powers the VM off cleanly
// instead of killing init; otherwise the panic goes on.
func Recover(log *slog.Logger, what string) {
	if r := recover(); r != nil {
		if !IsPID1() {
			panic(r)
		}
		_ = PowerOff(log, fmt.Sprintf("panic in %s: %v\n%s", what, r, debug.Stack()))
	}
}
