package container

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"unsafe"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/fscommon"
	"golang.org/x/sys/unix"
)

// oomWatcher reports OOM kills in one container's memory cgroup.
//
// libcontainer's NotifyOOM reads a blocking eventfd (cgroup v1) or inotify
// fd (v2) in a goroutine, and a goroutine blocked in a raw read pins an OS
// thread: every running container cost the agent one thread. Here the fd is
// non-blocking, so os.NewFile registers it with Go's netpoller and the
// watching goroutine parks without a thread; Close wakes it at once.
type oomWatcher struct {
	f    *os.File
	done chan struct{}
}

// newOOMWatcher starts watching the memory cgroup at dir; onOOM is called
// from the watcher's goroutine once per OOM notification.
func newOOMWatcher(dir string, onOOM func()) (*oomWatcher, error) {
	if dir == "" {
		return nil, errors.New("no memory cgroup")
	}
	w := &oomWatcher{done: make(chan struct{})}
	var run func()
	var err error
	if cgroups.IsCgroup2UnifiedMode() {
		run, err = w.openV2(dir, onOOM)
	} else {
		run, err = w.openV1(dir, onOOM)
	}
	if err != nil {
		return nil, err
	}
	go func() {
		defer close(w.done)
		defer w.f.Close()
		run()
	}()
	return w, nil
}

// Close stops the watcher and waits for its goroutine to end.
func (w *oomWatcher) Close() {
	_ = w.f.Close() // also wakes a Read parked in the netpoller
	<-w.done
}

// openV1 registers an eventfd for memory.oom_control through
// cgroup.event_control. The kernel signals it on every OOM in the cgroup,
// and once more when the cgroup is removed.
func (w *oomWatcher) openV1(dir string, onOOM func()) (func(), error) {
	ctl, err := os.Open(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		return nil, err
	}
	// The kernel needs the control file only while registering.
	defer ctl.Close()
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	w.f = os.NewFile(uintptr(efd), "oom-eventfd")
	eventControl := filepath.Join(dir, "cgroup.event_control")
	reg := strconv.Itoa(efd) + " " + strconv.Itoa(int(ctl.Fd()))
	if err := os.WriteFile(eventControl, []byte(reg), 0o600); err != nil {
		w.f.Close()
		return nil, fmt.Errorf("register OOM eventfd: %w", err)
	}
	return func() {
		var buf [8]byte
		for {
			if _, err := w.f.Read(buf[:]); err != nil {
				return // closed
			}
			// The removal notice looks like an OOM; the cgroup is gone then.
			if _, err := os.Lstat(eventControl); errors.Is(err, fs.ErrNotExist) {
				return
			}
			onOOM()
		}
	}, nil
}

// openV2 watches memory.events (its oom_kill counter) and cgroup.events
// (populated drops to 0 when the last process leaves) with inotify.
func (w *oomWatcher) openV2(dir string, onOOM func()) (func(), error) {
	ifd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	w.f = os.NewFile(uintptr(ifd), "oom-inotify")
	memWatch, err := unix.InotifyAddWatch(ifd, filepath.Join(dir, "memory.events"), unix.IN_MODIFY)
	if err != nil {
		w.f.Close()
		return nil, fmt.Errorf("watch memory.events: %w", err)
	}
	cgWatch, err := unix.InotifyAddWatch(ifd, filepath.Join(dir, "cgroup.events"), unix.IN_MODIFY)
	if err != nil {
		w.f.Close()
		return nil, fmt.Errorf("watch cgroup.events: %w", err)
	}
	oomKills := func() uint64 {
		n, _ := fscommon.GetValueByKey(dir, "memory.events", "oom_kill")
		return n
	}
	// Report each rise of oom_kill once: memory.events also changes on
	// high/max events, which are no OOM kills. The cgroup is new, so
	// counting from 0 also reports a kill from before the watch began.
	var seen uint64
	check := func() {
		if n := oomKills(); n > seen {
			seen = n
			onOOM()
		}
	}
	return func() {
		var buf [unix.SizeofInotifyEvent + unix.PathMax + 1]byte
		for {
			n, err := w.f.Read(buf[:])
			if err != nil {
				return // closed
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				off += unix.SizeofInotifyEvent + int(ev.Len)
				switch int(ev.Wd) {
				case memWatch:
					check()
				case cgWatch:
					populated, err := fscommon.GetValueByKey(dir, "cgroup.events", "populated")
					if err != nil || populated == 0 {
						// A kill just before the exit may not have
						// been read yet.
						check()
						return
					}
				}
			}
		}
	}, nil
}
