// Package container runs OCI containers with runc's libcontainer in the
// agent's own process: create with the exec-fifo split (the init waits until
// Start), exec, signals, waits through the agent's reaper, stdio through
// package stdio, freezer, cgroup updates and stats, and OOM notification.
//
// The binary that uses this package must handle libcontainer's `init`
// re-exec first thing in main (see InitHook).
package container

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/agent/reaper"
	"github.com/wren-vm/wren/agent/replysplice"
	"github.com/wren-vm/wren/agent/stdio"
)

// The kinds of failure this package reports (agent/errdefs; agent/rpc maps
// them to status codes).
var (
	// ErrNotFound: no such process in the container.
	ErrNotFound = errdefs.ErrNotFound
	// ErrExists: a process (or container) with that id already exists.
	ErrExists = errdefs.ErrAlreadyExists
	// ErrState: the container is not in a state that allows the operation.
	ErrState = errdefs.ErrFailedPrecondition
	// ErrInvalid: the request itself is malformed.
	ErrInvalid = errdefs.ErrInvalidArgument
)

// Config describes a container to create.
type Config struct {
	ID string
	// ExecID names the init process (Kata passes it in CreateContainer;
	// usually equal to ID). Empty means ID.
	ExecID string
	// Spec is the runtime spec; Root.Path must be absolute.
	Spec *specs.Spec
	// StateDir is libcontainer's state root (one directory per container).
	StateDir string
	// NoPivotRoot is set when / is an initramfs, where pivot_root fails.
	NoPivotRoot bool
	// PipeSize, when > 0, is set on every stdio pipe (F_SETPIPE_SZ).
	PipeSize int
	Reaper   *reaper.Reaper
	Log      *slog.Logger
	// OnOOM is called (from its own goroutine) each time the container's
	// memory cgroup reports an OOM kill. It must not block.
	OnOOM func(id string)
	// Stdio, when set, gives the init host connections as streams
	// (passfd IO) instead of pipes; the container owns the files.
	Stdio *stdio.Passthrough
}

// Container is one libcontainer container and its processes.
type Container struct {
	id       string
	lc       *libcontainer.Container
	reaper   *reaper.Reaper
	pipeSize int
	log      *slog.Logger
	onOOM    func(string)
	oom      *oomWatcher // set by Start, closed by Destroy

	// opMu serialises lifecycle changes of this container only; reads,
	// waits and IO never take it.
	opMu    sync.Mutex
	started bool

	mu    sync.Mutex
	init  *Process
	procs map[string]*Process // by exec id, including the init
	// drained remembers exec'd processes forgotten at their wait because
	// their output was already at EOF: reads of them still get EOF until
	// the entry's deadline (UnreadOutputLinger), as if they lingered.
	// Oldest first, since every entry lives equally long.
	drained []drainedExec
}

// drainedExec is what is left of a forgotten exec whose output was empty.
type drainedExec struct {
	execID   string
	deadline time.Time
}

// Create creates the container and starts its init, which then waits on the
// exec fifo until Start. On error nothing is left behind.
func Create(ctx context.Context, cfg Config) (_ *Container, retErr error) {
	// The stdio files are ours: closed here unless the init gets them.
	handed := false
	defer func() {
		if !handed {
			cfg.Stdio.Close()
		}
	}()
	if cfg.Reaper == nil {
		return nil, errors.New("container: no reaper")
	}
	spec := cfg.Spec
	if spec == nil || spec.Process == nil || spec.Root == nil || spec.Linux == nil {
		return nil, fmt.Errorf("%w: spec needs process, root and linux sections", ErrInvalid)
	}
	if !strings.HasPrefix(spec.Root.Path, "/") {
		return nil, fmt.Errorf("%w: root path %q is not absolute", ErrInvalid, spec.Root.Path)
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	execID := cfg.ExecID
	if execID == "" {
		execID = cfg.ID
	}
	if cgroups.IsCgroup2UnifiedMode() {
		ensureNamespace(spec, specs.CgroupNamespace)
	}
	lcCfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		CgroupName:  cfg.ID,
		NoPivotRoot: cfg.NoPivotRoot,
		Spec:        spec,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: convert spec: %v", ErrInvalid, err)
	}
	lc, err := libcontainer.Create(cfg.StateDir, cfg.ID, lcCfg)
	if err != nil {
		if errors.Is(err, libcontainer.ErrExist) {
			return nil, fmt.Errorf("container %s: %w", cfg.ID, ErrExists)
		}
		return nil, fmt.Errorf("libcontainer create %s: %w", cfg.ID, err)
	}
	c := &Container{
		id:       cfg.ID,
		lc:       lc,
		reaper:   cfg.Reaper,
		pipeSize: cfg.PipeSize,
		log:      log.With("container", cfg.ID),
		onOOM:    cfg.OnOOM,
		procs:    make(map[string]*Process),
	}
	defer func() {
		if retErr != nil {
			if err := lc.Destroy(); err != nil {
				c.log.Warn("destroy after failed create", "err", err)
			}
		}
	}()
	handed = true
	p, err := c.startProcess(spec.Process, execID, true, cfg.Stdio)
	if err != nil {
		return nil, err
	}
	c.init = p
	c.procs[execID] = p
	return c, nil
}

func ensureNamespace(spec *specs.Spec, typ specs.LinuxNamespaceType) {
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == typ {
			return
		}
	}
	spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: typ})
}

// startProcess starts the init (waiting on the exec fifo) or an exec'd
// process, registered with the reaper before it can exit.
func (c *Container) startProcess(sp *specs.Process, execID string, init bool, pt *stdio.Passthrough) (_ *Process, retErr error) {
	lp, err := newLibcontainerProcess(sp, init)
	if err != nil {
		pt.Close()
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var streams *stdio.Streams
	switch {
	case sp.Terminal:
		pt.Close() // a terminal is the process's only stream
		streams, err = stdio.NewTerminal()
		if err == nil {
			lp.ConsoleSocket = streams.ConsoleSocket()
		}
	case pt != nil:
		streams, err = stdio.NewPassthrough(c.pipeSize, *pt)
		if err == nil {
			lp.Stdin, lp.Stdout, lp.Stderr = streams.ChildStdio()
		}
	default:
		streams, err = stdio.NewPipes(c.pipeSize)
		if err == nil {
			lp.Stdin, lp.Stdout, lp.Stderr = streams.ChildStdio()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("stdio: %w", err)
	}
	defer func() {
		streams.CloseChildEnds()
		if retErr != nil {
			streams.Close()
		}
	}()
	exit, err := c.reaper.StartWithHandle(func() (int, func() (unix.WaitStatus, bool), error) {
		if err := c.lc.Start(lp); err != nil {
			return 0, nil, err
		}
		pid, err := lp.Pid()
		if init {
			return pid, nil, err
		}
		return pid, collectThroughHandle(lp), err
	})
	if err != nil {
		return nil, fmt.Errorf("start process %s: %w", execID, err)
	}
	p := &Process{ExecID: execID, Init: init, Streams: streams, exit: exit}
	if err := streams.ReceiveConsole(); err != nil {
		_ = c.reaper.Hold(func() error {
			select {
			case <-exit.Done():
			default:
				_ = unix.Kill(exit.Pid(), unix.SIGKILL)
			}
			return nil
		})
		<-exit.Done()
		return nil, err
	}
	p.watchExit()
	return p, nil
}

// ID is the container id.
func (c *Container) ID() string { return c.id }

// InitPid is the host pid of the container's init.
func (c *Container) InitPid() int { return c.init.Pid() }

// Init is the container's init process.
func (c *Container) Init() *Process { return c.init }

// Status is libcontainer's view of the container.
func (c *Container) Status() (libcontainer.Status, error) { return c.lc.Status() }

// Start releases the init from the exec fifo and starts OOM notification.
func (c *Container) Start(ctx context.Context) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	if c.started {
		return fmt.Errorf("container %s already started: %w", c.id, ErrState)
	}
	select {
	case <-c.init.Exited():
		return fmt.Errorf("container %s init has exited: %w", c.id, ErrState)
	default:
	}
	exeLink := fmt.Sprintf("/proc/%d/exe", c.init.Pid())
	before, _ := os.Readlink(exeLink)
	if err := c.lc.Exec(); err != nil {
		return fmt.Errorf("start container %s: %w", c.id, err)
	}
	c.started = true
	c.awaitExec(ctx, exeLink, before)
	if c.onOOM != nil {
		c.watchOOM()
	}
	return nil
}

// awaitExec waits until the init has replaced libcontainer's init code with
// the workload. Until then signals reach the Go runtime of the init, which as
// PID 1 of its namespace drops SIGTERM, and SigCgt describes the wrong
// program; after Start returns, both describe the workload.
func (c *Container) awaitExec(ctx context.Context, exeLink, before string) {
	if before == "" {
		return
	}
	delay := 100 * time.Microsecond
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if now, err := os.Readlink(exeLink); err != nil || now != before {
			return
		}
		select {
		case <-c.init.Exited():
			return
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Millisecond)
	}
	c.log.Warn("init did not exec its process in time")
}

// watchOOM forwards OOM events until Destroy, or until the cgroup goes away
// or (v2) empties. It does not use libcontainer's NotifyOOM, which pins an
// OS thread per container (see oomWatcher).
func (c *Container) watchOOM() {
	st, err := c.lc.State()
	if err != nil {
		c.log.Warn("OOM notifier unavailable", "err", err)
		return
	}
	dir := st.CgroupPaths["memory"]
	if cgroups.IsCgroup2UnifiedMode() {
		dir = st.CgroupPaths[""]
	}
	w, err := newOOMWatcher(dir, func() {
		c.log.Info("container OOM")
		c.onOOM(c.id)
	})
	if err != nil {
		c.log.Warn("OOM notifier unavailable", "err", err)
		return
	}
	c.oom = w
}

// Exec starts an extra process in the running container; it joins the
// container's namespaces and cgroup.
func (c *Container) Exec(ctx context.Context, execID string, sp *specs.Process, pt *stdio.Passthrough) (*Process, error) {
	// pt's files are ours: closed here unless the process gets them.
	handed := false
	defer func() {
		if !handed {
			pt.Close()
		}
	}()
	if execID == "" {
		return nil, fmt.Errorf("%w: empty exec id", ErrInvalid)
	}
	c.opMu.Lock()
	defer c.opMu.Unlock()
	st, err := c.lc.Status()
	if err != nil {
		return nil, fmt.Errorf("container %s status: %w", c.id, err)
	}
	if st != libcontainer.Running {
		return nil, fmt.Errorf("container %s is %s: %w", c.id, st, ErrState)
	}
	c.mu.Lock()
	_, dup := c.procs[execID]
	c.mu.Unlock()
	if dup {
		return nil, fmt.Errorf("process %s: %w", execID, ErrExists)
	}
	handed = true
	p, err := c.startProcess(sp, execID, false, pt)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.procs[execID] = p
	c.forgetDrainedLocked(execID)
	c.mu.Unlock()
	return p, nil
}

// Process finds a process; the empty exec id names the init.
func (c *Container) Process(execID string) (*Process, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if execID == "" {
		return c.init, nil
	}
	p, ok := c.procs[execID]
	if !ok {
		return nil, fmt.Errorf("process %s in container %s: %w", execID, c.id, ErrNotFound)
	}
	return p, nil
}

// forget drops a finished exec'd process and its streams.
func (c *Container) forget(p *Process) {
	if p.Init {
		return
	}
	c.mu.Lock()
	if c.procs[p.ExecID] == p {
		delete(c.procs, p.ExecID)
	}
	c.mu.Unlock()
	p.Streams.Close()
}

// Wait blocks until the process exits and returns its exit code.
func (c *Container) Wait(ctx context.Context, execID string) (int, error) {
	p, err := c.Process(execID)
	if err != nil {
		return 0, err
	}
	code, err := p.Wait(ctx)
	if err != nil {
		return 0, err
	}
	switch {
	case p.markWaited():
		c.forget(p)
	case p.Init:
	case p.markDrained():
		// Nothing is left to read: free the process now and answer its
		// reads with EOF from a small record instead of keeping its
		// pipes, buffers and state for the whole linger.
		c.forgetDrained(p)
	default:
		c.releaseWhenAbandoned(p, UnreadOutputLinger)
	}
	return code, nil
}

// forgetDrained forgets p and records that reads of it get EOF for
// UnreadOutputLinger.
func (c *Container) forgetDrained(p *Process) {
	now := time.Now()
	c.mu.Lock()
	c.expireDrainedLocked(now)
	if c.procs[p.ExecID] == p {
		delete(c.procs, p.ExecID)
		c.drained = append(c.drained, drainedExec{execID: p.ExecID, deadline: now.Add(UnreadOutputLinger)})
	}
	c.mu.Unlock()
	p.Streams.Close()
}

// expireDrainedLocked drops the records whose deadline has passed.
func (c *Container) expireDrainedLocked(now time.Time) {
	n := 0
	for n < len(c.drained) && now.After(c.drained[n].deadline) {
		n++
	}
	if n > 0 {
		c.drained = append(c.drained[:0], c.drained[n:]...)
	}
}

// drainedLocked reports whether execID is a forgotten exec whose reads
// still get EOF.
func (c *Container) drainedLocked(execID string) bool {
	c.expireDrainedLocked(time.Now())
	for _, d := range c.drained {
		if d.execID == execID {
			return true
		}
	}
	return false
}

// forgetDrainedLocked drops execID's record: the id names a new process.
func (c *Container) forgetDrainedLocked(execID string) {
	for i, d := range c.drained {
		if d.execID == execID {
			c.drained = append(c.drained[:i], c.drained[i+1:]...)
			return
		}
	}
}

// releaseWhenAbandoned forgets a waited-for exec once its output has gone
// unread for UnreadOutputLinger; a reader that is still draining keeps
// pushing the deadline out, so no output that someone is reading is lost.
func (c *Container) releaseWhenAbandoned(p *Process, after time.Duration) {
	time.AfterFunc(after, func() {
		switch d := p.abandonedFor(); {
		case d == 0:
			c.forget(p)
		case d > 0:
			c.releaseWhenAbandoned(p, d)
		}
	})
}

// Read reads the process's stdout or stderr (io.EOF at the end).
func (c *Container) Read(ctx context.Context, execID string, which stdio.Stream, n int) ([]byte, error) {
	b, _, err := c.read(ctx, execID, which, n, false)
	return b, err
}

// ReadSpliceable is Read that may leave large output in its pipe, as
// stdio.Streams.ReadSpliceable does: the caller sends it from there and
// closes pipe after.
func (c *Container) ReadSpliceable(ctx context.Context, execID string, which stdio.Stream, n int) (data []byte, pipe *replysplice.Pipe, err error) {
	return c.read(ctx, execID, which, n, true)
}

func (c *Container) read(ctx context.Context, execID string, which stdio.Stream, n int, spliceable bool) ([]byte, *replysplice.Pipe, error) {
	p, err := c.Process(execID)
	if err != nil {
		c.mu.Lock()
		drained := execID != "" && c.drainedLocked(execID)
		c.mu.Unlock()
		if drained {
			return nil, nil, errEOF
		}
		return nil, nil, err
	}
	p.touchRead()
	var (
		b    []byte
		pipe *replysplice.Pipe
	)
	if spliceable {
		b, pipe, err = p.Streams.ReadSpliceable(ctx, which, n)
	} else {
		b, err = p.Streams.Read(ctx, which, n)
	}
	p.touchRead()
	if err != nil && errors.Is(err, errEOF) {
		if p.markEOF(which) {
			c.forget(p)
		}
	}
	return b, pipe, err
}

// Signal signals one process, or with all set every process of the
// container (freezing the cgroup meanwhile so none can fork away).
func (c *Container) Signal(ctx context.Context, execID string, sig unix.Signal, all bool) error {
	if all {
		return c.signalAll(sig)
	}
	p, err := c.Process(execID)
	if err != nil {
		return err
	}
	if p.Init && sig == unix.SIGTERM && !handlesSignal(p.Pid(), unix.SIGTERM) {
		// The container's init is PID 1 of its namespace, and the kernel
		// drops signals PID 1 does not handle: SIGTERM would do nothing.
		sig = unix.SIGKILL
	}
	return c.reaper.Hold(func() error {
		// Under Hold the pid cannot be reaped (and reused) meanwhile.
		select {
		case <-p.Exited():
			return nil
		default:
		}
		if err := unix.Kill(p.Pid(), sig); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("kill %d: %w", p.Pid(), err)
		}
		return nil
	})
}

// handlesSignal reads SigCgt from /proc/<pid>/status.
func handlesSignal(pid int, sig unix.Signal) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return true // unknown: leave the signal as asked
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return true
			}
			return mask&(1<<(uint(sig)-1)) != 0
		}
	}
	return true
}

func (c *Container) signalAll(sig unix.Signal) error {
	return c.reaper.Hold(func() error {
		froze := c.lc.Pause() == nil
		pids, err := c.lc.Processes()
		if err == nil {
			for _, pid := range pids {
				if kerr := unix.Kill(pid, sig); kerr != nil && !errors.Is(kerr, unix.ESRCH) {
					c.log.Warn("kill", "pid", pid, "err", kerr)
				}
			}
		}
		if froze || sig == unix.SIGKILL {
			// A frozen v1 cgroup delays even SIGKILL until thawed.
			_ = c.lc.Resume()
		}
		if err != nil {
			return fmt.Errorf("list processes of %s: %w", c.id, err)
		}
		return nil
	})
}

// Pause freezes the container.
func (c *Container) Pause(ctx context.Context) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	if err := c.lc.Pause(); err != nil {
		if errors.Is(err, libcontainer.ErrNotRunning) {
			return fmt.Errorf("pause %s: %w", c.id, ErrState)
		}
		return fmt.Errorf("pause %s: %w", c.id, err)
	}
	return nil
}

// Resume thaws the container.
func (c *Container) Resume(ctx context.Context) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	st, err := c.lc.Status()
	if err == nil && st != libcontainer.Paused {
		return fmt.Errorf("resume %s: container is %s: %w", c.id, st, ErrState)
	}
	if err := c.lc.Resume(); err != nil {
		return fmt.Errorf("resume %s: %w", c.id, err)
	}
	return nil
}

// Stats reads the container's cgroup statistics.
func (c *Container) Stats(ctx context.Context) (*cgroups.Stats, error) {
	st, err := c.lc.Stats()
	if err != nil {
		return nil, fmt.Errorf("stats %s: %w", c.id, err)
	}
	if st.CgroupStats == nil {
		return &cgroups.Stats{}, nil
	}
	return st.CgroupStats, nil
}

// Processes lists the pids in the container's cgroup.
func (c *Container) Processes() ([]int, error) { return c.lc.Processes() }

// Destroy kills every process of the container, waits for them to exit (as
// long as ctx allows) and removes the container's cgroups and state.
func (c *Container) Destroy(ctx context.Context) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	if err := c.signalAll(unix.SIGKILL); err != nil {
		c.log.Debug("kill all before destroy", "err", err)
	}
	c.mu.Lock()
	procs := make([]*Process, 0, len(c.procs))
	for _, p := range c.procs {
		procs = append(procs, p)
	}
	c.mu.Unlock()
	for _, p := range procs {
		if _, err := p.Wait(ctx); err != nil {
			return fmt.Errorf("wait for process %s of %s: %w", p.ExecID, c.id, err)
		}
	}
	if err := c.lc.Destroy(); err != nil {
		return fmt.Errorf("destroy %s: %w", c.id, err)
	}
	if c.oom != nil {
		c.oom.Close()
		c.oom = nil
	}
	for _, p := range procs {
		p.Streams.Close()
	}
	return nil
}
