// Package reaper owns wait4 for every child of the agent.
//
// The agent is a child subreaper (and PID 1 in the guest), so container
// processes, their orphans and everything else that loses its parent end up
// as its children. Exactly one goroutine calls wait4(-1); everyone else gets
// exit statuses from it. Code that must wait for its own children — libcontainer
// waits for the short-lived nsexec stage processes while it starts a container,
// exec.Cmd.Wait waits for its command — runs inside Start or Hold, which keep
// the reap loop off while they run. Start also registers the pid it returns
// before the reap loop can see that pid exit, so no exit is ever lost to a
// race between "started" and "registered".
package reaper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"
)

// ExitSignalOffset is added to the number of the signal that killed a process
// to form its exit code, as shells do.
const ExitSignalOffset = 128

// Exit is the future exit status of one registered process.
type Exit struct {
	pid  int
	done chan struct{}
	code int
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
	r.reap()
	for {
		select {
		case <-r.stop:
			return
		case <-r.sigc:
			r.reap()
		}
	}
}

// reap collects every child that has exited. Signals coalesce, so one SIGCHLD
// may stand for many exits: loop until wait4 reports nothing left.
func (r *Reaper) reap() {
	r.gate.Lock()
	defer r.gate.Unlock()
	for {
		var ws unix.WaitStatus
		var ru unix.Rusage
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WALL, &ru)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			// ECHILD: no children at all; 0: none has exited.
			return
		}
		if !ws.Exited() && !ws.Signaled() {
			continue // stopped or continued; not an exit
		}
		code := exitCode(ws)
		r.mu.Lock()
		e, ok := r.watched[pid]
		delete(r.watched, pid)
		r.mu.Unlock()
		if !ok {
			r.log.Debug("reaped unregistered child", "pid", pid, "status", code)
			continue
		}
		e.code = code
		close(e.done)
	}
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
	r.gate.RLock()
	defer r.gate.RUnlock()
	pid, err := start()
	if err != nil {
		return nil, err
	}
	if pid <= 0 {
		return nil, fmt.Errorf("start returned invalid pid %d", pid)
	}
	e := &Exit{pid: pid, done: make(chan struct{})}
	r.mu.Lock()
	r.watched[pid] = e
	r.mu.Unlock()
	return e, nil
}

// Hold runs fn with the reap loop held off, for code that waits for its own
// children (exec.Cmd.Run, libcontainer calls that wait). Keep fn short.
func (r *Reaper) Hold(fn func() error) error {
	r.gate.RLock()
	defer r.gate.RUnlock()
	return fn()
}
