package container

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/reaper"
	"github.com/wren-vm/wren/agent/stdio"
)

// Process is one process of a container: its init or an exec'd process.
type Process struct {
	ExecID  string
	Init    bool
	Streams *stdio.Streams

	exit *reaper.Exit
	// waited and the EOF flags decide when an exec'd process may be
	// forgotten: only after someone waited for it and its output drained.
	mu       sync.Mutex
	waited   bool
	outDone  bool
	errDone  bool
	released bool
	// lastRead is when output was last read; an exec'd process that was
	// waited for but whose output nobody reads is released once reads
	// have been idle for UnreadOutputLinger.
	lastRead time.Time
}

// UnreadOutputLinger is how long the output of an exec'd process that was
// waited for stays readable without anyone reading it. Without a limit, a
// client that waits for execs but never drains their output (or goes away)
// would pin three fds per exec until the container is removed.
var UnreadOutputLinger = 10 * time.Second

// Pid is the host pid of the process.
func (p *Process) Pid() int { return p.exit.Pid() }

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exit.Done() }

// Wait blocks until the process exits (or ctx ends) and returns its exit
// code (128+signal when killed by a signal).
func (p *Process) Wait(ctx context.Context) (int, error) {
	return p.exit.Wait(ctx)
}

// watchExit makes the streams switch to draining once the process exits.
func (p *Process) watchExit() {
	go func() {
		<-p.exit.Done()
		p.Streams.MarkExited()
	}()
}

// markWaited and markEOF record progress; they report whether the process is
// now finished from the API's point of view (waited and both outputs at EOF).
func (p *Process) markWaited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waited = true
	return p.finishedLocked()
}

// touchRead records read activity, which keeps unread output alive.
func (p *Process) touchRead() {
	p.mu.Lock()
	p.lastRead = time.Now()
	p.mu.Unlock()
}

// abandonedFor reports how long to wait before output reads count as
// abandoned (0: abandoned now, and the process is marked released, so
// the caller must forget it).
func (p *Process) abandonedFor() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.released {
		return -1
	}
	if idle := time.Since(p.lastRead); idle < UnreadOutputLinger {
		return UnreadOutputLinger - idle
	}
	p.released = true
	return 0
}

// markDrained reports whether p, waited for, has output that is already at
// EOF (stdio.Streams.Drained), and if so marks it released so that nothing
// else forgets it too.
func (p *Process) markDrained() bool {
	if !p.Streams.Drained() {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.released {
		return false
	}
	p.released = true
	return true
}

func (p *Process) markEOF(which stdio.Stream) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if which == stdio.Stderr {
		p.errDone = true
	} else {
		p.outDone = true
	}
	return p.finishedLocked()
}

func (p *Process) finishedLocked() bool {
	errDone := p.errDone || p.Streams.Terminal()
	if p.waited && p.outDone && errDone && !p.released {
		p.released = true
		return true
	}
	return false
}

// newLibcontainerProcess converts the runtime-spec process into the
// libcontainer form, the same way runc does for `runc exec` and `runc run`.
func newLibcontainerProcess(p *specs.Process, init bool) (*libcontainer.Process, error) {
	if p == nil {
		return nil, fmt.Errorf("process is missing")
	}
	if len(p.Args) == 0 {
		return nil, fmt.Errorf("process args are empty")
	}
	nnp := p.NoNewPrivileges
	lp := &libcontainer.Process{
		Args:            p.Args,
		Env:             p.Env,
		UID:             int(p.User.UID),
		GID:             int(p.User.GID),
		Cwd:             p.Cwd,
		Label:           p.SelinuxLabel,
		NoNewPrivileges: &nnp,
		AppArmorProfile: p.ApparmorProfile,
		Scheduler:       p.Scheduler,
		IOPriority:      p.IOPriority,
		Init:            init,
		// Without a level, libcontainer's nsexec logs at debug (its log.c
		// default): every start and exec then sent dozens of JSON lines
		// over the log pipe, which the agent decoded only for logrus to
		// drop them (about a quarter of the bytes an exec allocated).
		LogLevel: strconv.Itoa(int(logrus.GetLevel())),
	}
	if lp.Cwd == "" {
		lp.Cwd = "/"
	}
	if p.ConsoleSize != nil {
		lp.ConsoleWidth = uint16(p.ConsoleSize.Width)
		lp.ConsoleHeight = uint16(p.ConsoleSize.Height)
	}
	if c := p.Capabilities; c != nil {
		lp.Capabilities = &configs.Capabilities{
			Bounding:    c.Bounding,
			Effective:   c.Effective,
			Inheritable: c.Inheritable,
			Permitted:   c.Permitted,
			Ambient:     c.Ambient,
		}
	}
	for _, g := range p.User.AdditionalGids {
		lp.AdditionalGroups = append(lp.AdditionalGroups, int(g))
	}
	for _, r := range p.Rlimits {
		typ, ok := rlimitTypes[r.Type]
		if !ok {
			return nil, fmt.Errorf("unknown rlimit %q", r.Type)
		}
		lp.Rlimits = append(lp.Rlimits, configs.Rlimit{Type: typ, Hard: r.Hard, Soft: r.Soft})
	}
	aff, err := configs.ConvertCPUAffinity(p.ExecCPUAffinity)
	if err != nil {
		return nil, fmt.Errorf("exec cpu affinity: %w", err)
	}
	lp.CPUAffinity = aff
	return lp, nil
}

var rlimitTypes = map[string]int{
	"RLIMIT_AS":         unix.RLIMIT_AS,
	"RLIMIT_CORE":       unix.RLIMIT_CORE,
	"RLIMIT_CPU":        unix.RLIMIT_CPU,
	"RLIMIT_DATA":       unix.RLIMIT_DATA,
	"RLIMIT_FSIZE":      unix.RLIMIT_FSIZE,
	"RLIMIT_LOCKS":      unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK":    unix.RLIMIT_MEMLOCK,
	"RLIMIT_MSGQUEUE":   unix.RLIMIT_MSGQUEUE,
	"RLIMIT_NICE":       unix.RLIMIT_NICE,
	"RLIMIT_NOFILE":     unix.RLIMIT_NOFILE,
	"RLIMIT_NPROC":      unix.RLIMIT_NPROC,
	"RLIMIT_RSS":        unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO":     unix.RLIMIT_RTPRIO,
	"RLIMIT_RTTIME":     unix.RLIMIT_RTTIME,
	"RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK":      unix.RLIMIT_STACK,
}
