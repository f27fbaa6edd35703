// Command testinit is a minimal PID 1 for guest boot tests of the images
// rootfs-builder makes: it mounts the kernel filesystems, loads the image's
// module list with agent/kmodload, optionally mounts the DAX image from
// /dev/pmem0p1 and prints a file from it, reports every step on the console
// as "testinit: ..." lines, and powers the VM off.
//
// Kernel command line: testinit.dax=<path inside the image> turns on the DAX
// check; testinit.modprobe=<name> loads a module by name with its
// dependencies (kmodload.LoadByName).
package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/kmodload"
	"github.com/wren-vm/wren/lib/kmod"
)

func say(format string, args ...any) {
	fmt.Fprintf(os.Stdout, "testinit: "+format+"\n", args...)
}

func main() {
	defer powerOff()
	defer func() {
		if r := recover(); r != nil {
			say("panic: %v", r)
		}
	}()
	say("start pid=%d", os.Getpid())
	for _, m := range []struct{ src, dst, fs string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
	} {
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil {
			say("error: mount %s: %v", m.dst, err)
		}
	}
	start := time.Now()
	n, err := kmodload.LoadList(kmod.ListPath)
	if err != nil {
		say("error: modules: %v", err)
	}
	say("modules loaded=%d in %s", n, time.Since(start).Round(time.Millisecond))
	if mods, err := os.ReadFile("/proc/modules"); err == nil {
		say("proc-modules=%d", strings.Count(string(mods), "\n"))
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	for _, f := range strings.Fields(string(cmdline)) {
		if v, ok := strings.CutPrefix(f, "testinit.dax="); ok {
			checkDAX(v)
		}
		if v, ok := strings.CutPrefix(f, "testinit.modprobe="); ok {
			if err := kmodload.LoadByName("", v, nil); err != nil {
				say("error: load %s by name: %v", v, err)
			} else if _, err := os.Stat("/sys/module/" + v); err != nil {
				say("error: %s not loaded: %v", v, err)
			} else {
				say("modprobe %s ok", v)
			}
		}
	}
	say("done")
}

func checkDAX(file string) {
	dev := "/dev/pmem0p1"
	deadline := time.Now().Add(2 * time.Minute) // a hang guard: probing is slow on a loaded TCG host
	for {
		if _, err := os.Stat(dev); err == nil {
			break
		}
		if time.Now().After(deadline) {
			say("error: %s did not appear", dev)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := os.MkdirAll("/mnt/image", 0o755); err != nil {
		say("error: %v", err)
		return
	}
	if err := unix.Mount(dev, "/mnt/image", "ext4", unix.MS_RDONLY, "dax"); err != nil {
		say("error: mount %s with dax: %v", dev, err)
		return
	}
	if mounts, err := os.ReadFile("/proc/mounts"); err == nil {
		for _, l := range strings.Split(string(mounts), "\n") {
			if strings.HasPrefix(l, dev+" ") {
				say("mount %s", l)
			}
		}
	}
	b, err := os.ReadFile("/mnt/image/" + strings.TrimPrefix(file, "/"))
	if err != nil {
		say("error: read %s: %v", file, err)
		return
	}
	say("dax-file=%q", strings.TrimSpace(string(b)))
}

func powerOff() {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		say("error: power off: %v", err)
	}
	// Returning from PID 1 panics the kernel; with panic=-1 the VM still
	// ends, but block instead so the console shows the power-off error.
	select {}
}
