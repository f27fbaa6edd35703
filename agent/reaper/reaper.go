// Package reaper owns the reaping of the agent's children.
//
// The agent is a child subreaper (and PID 1 in the guest), so container
// processes, their orphans and everything else that loses its parent end up
// as its children. One goroutine reaps them; everyone else gets exit
// statuses from it (Exit). Processes are registered with Start, which runs
// the start function with the reap loop held off and registers the pid
// before the loop can see that pid exit.
//
// Other code in the agent still starts short-lived commands with os/exec
// and waits for them itself, and libcontainer waits for its nsexec stage
// processes. A blind wait4(-1) would steal those children (their Wait
// would fail with ECHILD). So the loop reaps a child only when it is a
// zombie (seen with waitid WNOWAIT) and either registered, or unregistered for
// longer than OrphanGrace — time for its own parent code to wait for it.
// Hold keeps the loop off entirely while fn runs.
package reaper

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// OrphanGrace is how long an unregistered zombie child is left for the code
// that started it (exec.Cmd.Wait) before the reaper collects it.
const OrphanGrace = 3 * time.Second

// ExitSignalOffset is added to the number of the signal that killed a process
// to form its exit code, as shells do.
const ExitSignalOffset = 128

// Exit is the future exit status of one registered process.
type Exit struct {
	pid  int
	done chan struct{}
	code int
	// collect, when set, reaps the process through its starter's own
	// handle (see StartWithHandle).
	collect func() (unix.WaitStatus, bool)
}

// Pid is the process id the Exit belongs to.
func (e *Exit) Pid() int { return e.pid }

// Done is closed once the process has exited and was reaped.
func (e *Exit) Done() <-chan struct{} { return e.done }

// Code is the exit status, or 128+signal for a process killed by a signal.
// It is only meaningful after Done is closed.
func (e *Exit) Code() int {
	<-e.done
	return e.code
}

// Wait blocks until the process exits or ctx ends. Any number of goroutines
// may wait for the same Exit.
func (e *Exit) Wait(ctx context.Context) (int, error) {
	select {
	case <-e.done:
		return e.code, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// Reaper reaps every child of the process. Create one per process with New.
type Reaper struct {
	log *slog.Logger

	// gate is read-held by Start and Hold callers and write-held by the
	// reap loop around its wait4 calls, so the loop never steals a child
	// that another piece of code is about to wait for itself.
	gate sync.RWMutex

	mu      sync.Mutex
	watched map[int]*Exit

	// seen records when the loop first saw an unregistered zombie (only
	// the loop uses it).
	seen map[int]time.Time

	sigc chan os.Signal
	stop chan struct{}
	done chan struct{}
}

// New makes the calling process a child subreaper and starts the reap loop.
func New(log *slog.Logger) (*Reaper, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	r := &Reaper{
		log:     log.With("component", "reaper"),
		watched: make(map[int]*Exit),
		seen:    make(map[int]time.Time),
		sigc:    make(chan os.Signal, 16),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	signal.Notify(r.sigc, unix.SIGCHLD)
	go r.loop()
	return r, nil
}

// Close stops the reap loop. Registered processes that have not exited yet
// are left as they are; their Exits never complete.
func (r *Reaper) Close() {
	select {
	case <-r.stop:
		return
	default:
	}
	signal.Stop(r.sigc)
	close(r.stop)
	<-r.done
}

func (r *Reaper) loop() {
	defer close(r.done)
	// Children may have exited before the signal handler was installed.
	next := r.reap()
	for {
		var retry <-chan time.Time
		if next > 0 {
			retry = time.After(next)
		}
		select {
		case <-r.stop:
			return
		case <-r.sigc:
		case <-retry:
		}
		next = r.reap()
	}
}

// reap collects the zombie children that are registered or past their
// grace, and returns when to look again for the ones still in grace (0:
// no need). Signals coalesce, so it collects every zombie it can each time.
//
// It asks the kernel for zombies with waitid(WNOWAIT), which costs the same
// however many processes run. Scanning /proc instead (what zombieChildren
// does) reads one file per process on the machine, and an earlier version
// did that on every SIGCHLD: each container start and exec then cost
// O(processes), with Start held off meanwhile.
func (r *Reaper) reap() time.Duration {
	r.gate.Lock()
	defer r.gate.Unlock()
	now := time.Now()
	for pid := range r.seen {
		if peekZombie(pid) != pid {
			delete(r.seen, pid) // its own parent code reaped it
		}
	}
	var next time.Duration
	later := func(d time.Duration) {
		if next == 0 || d < next {
			next = d
		}
	}
	for last := 0; ; {
		// waitid reports one zombie at a time, the same one until it
		// is reaped.
		pid := peekZombie(-1)
		if pid <= 0 || pid == last {
			break
		}
		last = pid
		wait := r.consider(pid, now)
		if wait == 0 {
			continue
		}
		// An unregistered zombie in its grace (an os/exec child whose
		// Wait is due) hides every zombie behind it from waitid(P_ALL).
		// This is rare, and only here does the loop pay for a scan of
		// /proc, so that registered exits are not delayed and every
		// orphan's grace starts when it exits.
		later(wait)
		for z := range zombieChildren() {
			if z != pid {
				if wait := r.consider(z, now); wait > 0 {
					later(wait)
				}
			}
		}
		break
	}
	return next
}

// consider reaps the zombie child pid if it is registered or past its
// grace; otherwise it returns how much of the grace is left.
func (r *Reaper) consider(pid int, now time.Time) time.Duration {
	r.mu.Lock()
	e, registered := r.watched[pid]
	r.mu.Unlock()
	if !registered {
		first, ok := r.seen[pid]
		if !ok {
			r.seen[pid] = now
			first = now
		}
		if wait := OrphanGrace - now.Sub(first); wait > 0 {
			return wait
		}
	}
	r.collect(pid, e)
	return 0
}

// zombieChildren lists this process's children that have exited and wait
// to be reaped, from /proc/<pid>/stat of every process.
func zombieChildren() map[int]bool {
	self := strconv.Itoa(os.Getpid())
	out := map[int]bool{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may contain anything but ends
		// at the last ')'.
		line := string(b)
		i := strings.LastIndexByte(line, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(line[i+1:])
		if len(f) < 2 || f[0] != "Z" || f[1] != self {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
			out[pid] = true
		}
	}
	return out
}

// collect reaps pid, a zombie child, and completes its Exit (e, nil when
// the child is not registered).
func (r *Reaper) collect(pid int, e *Exit) {
	var ws unix.WaitStatus
	ok := false
	if e != nil && e.collect != nil {
		ws, ok = e.collect()
	}
	if !ok {
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG|unix.WALL, nil)
		if err != nil || got != pid || (!ws.Exited() && !ws.Signaled()) {
			return // someone else reaped it meanwhile
		}
	}
	delete(r.seen, pid)
	code := exitCode(ws)
	if e == nil {
		r.log.Debug("reaped unregistered child", "pid", pid, "status", code)
		return
	}
	r.mu.Lock()
	delete(r.watched, pid)
	r.mu.Unlock()
	e.code = code
	close(e.done)
}

// peekZombie returns the pid of a child that has exited and waits to be
// reaped, without reaping it: pid -1 asks about any child, pid > 0 about
// that one. It returns 0 when there is none (or the pid is not a child).
func peekZombie(pid int) int {
	idType, id := unix.P_PID, pid
	if pid < 0 {
		idType, id = unix.P_ALL, 0
	}
	var si unix.Siginfo
	if err := unix.Waitid(idType, id, &si, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT|unix.WALL, nil); err != nil {
		return 0
	}
	return siginfoPid(&si)
}

// siginfoPid reads si_pid, which x/sys/unix does not expose: it follows
// si_signo, si_errno and si_code, padded to the union's alignment. With
// WNOHANG and no zombie the kernel leaves it 0.
func siginfoPid(si *unix.Siginfo) int {
	b := (*[unsafe.Sizeof(unix.Siginfo{})]byte)(unsafe.Pointer(si))
	off := 12
	if unsafe.Sizeof(uintptr(0)) == 8 {
		off = 16
	}
	return int(int32(binary.NativeEndian.Uint32(b[off:])))
}

func exitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return ExitSignalOffset + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// Start runs start, which must start exactly one long-lived child and return
// its pid, with the reap loop held off, and registers that pid before the loop
// can reap it. Children that start creates and waits for itself (as
// libcontainer does with its nsexec stages) are safe from the loop. start
// should not block for long: reaping of every other child waits for it.
func (r *Reaper) Start(start func() (int, error)) (*Exit, error) {
	return r.StartWithHandle(func() (int, func() (unix.WaitStatus, bool), error) {
		pid, err := start()
		return pid, nil, err
	})
}

// StartWithHandle is Start for a child that its starter holds a handle on
// (an os.Process, which keeps a pidfd open until it is waited for or
// garbage collected). start also returns collect, which the loop calls
// instead of wait4 once the child is a zombie, so that the handle is
// released when the child is reaped: collect must reap the child without
// blocking and report its status (ok false if it could not, and the loop
// falls back to wait4).
func (r *Reaper) StartWithHandle(start func() (int, func() (unix.WaitStatus, bool), error)) (*Exit, error) {
	r.gate.RLock()
	defer r.gate.RUnlock()
	pid, collect, err := start()
	if err != nil {
		return nil, err
	}
	if pid <= 0 {
		return nil, fmt.Errorf("start returned invalid pid %d", pid)
	}
	e := &Exit{pid: pid, done: make(chan struct{}), collect: collect}
	r.mu.Lock()
	r.watched[pid] = e
	r.mu.Unlock()
	return e, nil
}

// Hold runs fn with the reap loop held off, for code that waits for its own
// children and may take longer than OrphanGrace to do so. Keep fn short.
func (r *Reaper) Hold(fn func() error) error {
	r.gate.RLock()
	defer r.gate.RUnlock()
	return fn()
}
