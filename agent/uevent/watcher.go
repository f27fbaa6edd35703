package uevent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/errdefs"
)

// DefaultHotplugTimeout is Kata's agent.hotplug_timeout default.
const DefaultHotplugTimeout = 3 * time.Second

// Options tunes a Watcher. The zero value is what the agent uses in a guest.
type Options struct {
	// SysfsRoot is where sysfs is mounted; "" means /sys.
	SysfsRoot string
	// HotplugTimeout bounds every Wait; 0 means DefaultHotplugTimeout.
	HotplugTimeout time.Duration
	// ColdplugDirs are the sysfs directories (relative to SysfsRoot,
	// "class/<subsystem>" or "bus/<subsystem>/devices") whose existing
	// devices are recorded as seen when listening starts, because the
	// kernel announced them before anyone was listening; nil means
	// class/block, class/net and bus/pci/devices (cold-plugged VFIO).
	ColdplugDirs []string
}

// Watcher receives kernel uevents and keeps the set of devices present.
type Watcher struct {
	log     *slog.Logger
	sysfs   string
	timeout time.Duration
	dirs    []string
	file    *os.File

	mu      sync.Mutex
	seen    map[string]Event // by DevPath
	waiters map[*waiter]struct{}

	done chan struct{}
}

type waiter struct {
	match func(Event) bool
	ch    chan Event // buffered: the dispatcher never blocks on it
}

// Listen opens a NETLINK_KOBJECT_UEVENT socket, records the devices already
// present and starts receiving. Start it before anything waits for a device;
// it runs until ctx is done or Close is called.
func Listen(ctx context.Context, log *slog.Logger, opts Options) (*Watcher, error) {
	if log == nil {
		log = slog.Default()
	}
	w := &Watcher{
		log:     log.With("component", "uevent"),
		sysfs:   opts.SysfsRoot,
		timeout: opts.HotplugTimeout,
		dirs:    opts.ColdplugDirs,
		seen:    map[string]Event{},
		waiters: map[*waiter]struct{}{},
		done:    make(chan struct{}),
	}
	if w.sysfs == "" {
		w.sysfs = "/sys"
	}
	if w.timeout <= 0 {
		w.timeout = DefaultHotplugTimeout
	}
	if w.dirs == nil {
		w.dirs = []string{"class/block", "class/net", "bus/pci/devices"}
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("uevent socket: %w", err)
	}
	// A burst of hotplug events must not overflow the socket: events lost to
	// ENOBUFS are recovered by a sysfs rescan, but that is slower.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("uevent bind: %w", err)
	}
	w.file = os.NewFile(uintptr(fd), "uevent-netlink")
	// Bound before the scan, so a device added during it is not missed.
	w.coldplug()
	go w.run()
	go func() {
		select {
		case <-ctx.Done():
			w.Close()
		case <-w.done:
		}
	}()
	return w, nil
}

// Close stops the watcher; pending and later Waits fail with Unavailable.
func (w *Watcher) Close() error {
	w.mu.Lock()
	select {
	case <-w.done:
		w.mu.Unlock()
		return nil
	default:
	}
	close(w.done)
	w.mu.Unlock()
	return w.file.Close()
}

// Timeout is the hotplug timeout every Wait uses.
func (w *Watcher) Timeout() time.Duration { return w.timeout }

// SysfsRoot is where the watcher reads sysfs.
func (w *Watcher) SysfsRoot() string { return w.sysfs }

// Wait returns the first seen device for which match is true: at once when
// it is already present, else when its uevent arrives. After the hotplug
// timeout it fails with DeadlineExceeded naming device.
func (w *Watcher) Wait(ctx context.Context, device string, match func(Event) bool) (Event, error) {
	w.mu.Lock()
	select {
	case <-w.done:
		w.mu.Unlock()
		return Event{}, errdefs.Errorf(errdefs.ErrUnavailable, "uevent watcher stopped while waiting for %s", device)
	default:
	}
	for _, ev := range w.seen {
		if match(ev) {
			w.mu.Unlock()
			return ev, nil
		}
	}
	wt := &waiter{match: match, ch: make(chan Event, 1)}
	w.waiters[wt] = struct{}{}
	w.mu.Unlock()

	timer := time.NewTimer(w.timeout)
	defer timer.Stop()
	var err error
	select {
	case ev := <-wt.ch:
		return ev, nil
	case <-timer.C:
		err = errdefs.Errorf(errdefs.ErrDeadlineExceeded, "timeout after %v waiting for uevent of %s", w.timeout, device)
	case <-ctx.Done():
		err = ctx.Err()
	case <-w.done:
		err = errdefs.Errorf(errdefs.ErrUnavailable, "uevent watcher stopped while waiting for %s", device)
	}
	w.mu.Lock()
	delete(w.waiters, wt)
	w.mu.Unlock()
	// The device may have arrived between the timeout and the removal.
	select {
	case ev := <-wt.ch:
		return ev, nil
	default:
	}
	return Event{}, err
}

func (w *Watcher) run() {
	rc, err := w.file.SyscallConn()
	if err != nil {
		w.log.Error("uevent socket unusable", "err", err)
		return
	}
	buf := make([]byte, maxEventSize+1)
	for {
		var (
			n    int
			from unix.Sockaddr
			rerr error
		)
		err := rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN
		})
		if err == nil {
			err = rerr
		}
		select {
		case <-w.done:
			return
		default:
		}
		if errors.Is(err, unix.ENOBUFS) {
			w.log.Warn("uevent socket overflowed; rescanning sysfs")
			w.coldplug()
			continue
		}
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			w.log.Error("uevent receive failed", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		// Only the kernel (port id 0) speaks for devices; anything else on
		// the multicast group is a forgery or udevd's re-broadcast.
		if nl, ok := from.(*unix.SockaddrNetlink); !ok || nl.Pid != 0 {
			continue
		}
		ev, perr := Parse(buf[:n])
		if perr != nil {
			w.log.Debug("dropping malformed uevent", "err", perr)
			continue
		}
		w.handle(ev)
	}
}

// handle records ev and wakes the waiters it satisfies.
func (w *Watcher) handle(ev Event) {
	w.log.Debug("uevent", "action", ev.Action, "devpath", ev.DevPath, "subsystem", ev.Subsystem, "devname", ev.DevName)
	w.mu.Lock()
	switch ev.Action {
	case ActionRemove:
		delete(w.seen, ev.DevPath)
	case ActionAdd, ActionChange, ActionBind, ActionOnline:
		w.seen[ev.DevPath] = ev
		for wt := range w.waiters {
			if wt.match(ev) {
				wt.ch <- ev
				delete(w.waiters, wt)
			}
		}
	}
	w.mu.Unlock()

	if ev.Action == ActionAdd && ev.Subsystem == "memory" {
		w.onlineMemory(ev.DevPath)
	}
}

// onlineMemory onlines a hot-added memory block, as Kata does, so memory
// hotplug works without udev rules or memhp_default_state.
func (w *Watcher) onlineMemory(devPath string) {
	if strings.Contains(devPath, "..") {
		return
	}
	p := filepath.Join(w.sysfs, devPath, "online")
	if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == "1" {
		return
	}
	if err := os.WriteFile(p, []byte("1"), 0); err != nil {
		w.log.Warn("onlining memory block failed", "path", p, "err", err)
		return
	}
	w.log.Info("memory block onlined", "devpath", devPath)
}

// coldplug records the devices that exist in sysfs, without replacing what a
// live event already told us.
func (w *Watcher) coldplug() {
	var found []Event
	for _, rel := range w.dirs {
		dir := filepath.Join(w.sysfs, rel)
		subsystem := subsystemOf(rel)
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			real, err := filepath.EvalSymlinks(filepath.Join(dir, e.Name()))
			if err != nil {
				continue
			}
			rel, err := filepath.Rel(w.sysfs, real)
			if err != nil || strings.HasPrefix(rel, "..") {
				continue
			}
			b, err := os.ReadFile(filepath.Join(real, "uevent"))
			if err != nil {
				continue
			}
			ev := parseUeventFile("/"+rel, b)
			ev.Subsystem = subsystem
			found = append(found, ev)
		}
	}
	w.mu.Lock()
	for _, ev := range found {
		if _, ok := w.seen[ev.DevPath]; !ok {
			w.seen[ev.DevPath] = ev
		}
	}
	for wt := range w.waiters {
		for _, ev := range found {
			if wt.match(ev) {
				wt.ch <- ev
				delete(w.waiters, wt)
				break
			}
		}
	}
	w.mu.Unlock()
}

// subsystemOf names the subsystem of a coldplug directory: class/<s> or
// bus/<s>/devices.
func subsystemOf(rel string) string {
	parts := strings.Split(filepath.ToSlash(rel), "/")
	if len(parts) >= 2 && (parts[0] == "class" || parts[0] == "bus") {
		return parts[1]
	}
	return filepath.Base(rel)
}
