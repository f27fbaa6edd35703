// Package passfd serves Kata's passfd IO: the host connects one stream per
// process stdio to a vsock port of the agent's (agent.passfd_listener_port),
// and names those connections in CreateContainer and ExecProcess by the
// port each came from (stdin_port, stdout_port, stderr_port). The process
// then reads and writes the connections itself: no ReadStdout round trips,
// no copy through the agent. Connections wait here, keyed by their peer's
// port, until a request takes them.
package passfd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/errdefs"
)

// Kata's figures: how long a request waits for a connection it names, and
// how many connections may wait for a request before the oldest goes.
const (
	StreamTimeout = 5 * time.Second
	MaxPending    = 256
)

// Streams holds the connections that wait for a request.
type Streams struct {
	log *slog.Logger

	mu      sync.Mutex
	pending map[uint32]net.Conn
	order   []uint32      // arrival order, for dropping the oldest
	arrived chan struct{} // closed and replaced when one arrives
}

// Serve accepts connections on ln until ctx ends, keyed by PortOf.
func Serve(ctx context.Context, ln net.Listener, log *slog.Logger) *Streams {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Streams{log: log, pending: map[uint32]net.Conn{}, arrived: make(chan struct{})}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go s.acceptLoop(ln)
	return s
}

func (s *Streams) acceptLoop(ln net.Listener) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("passfd accept loop panicked", "panic", r)
		}
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Warn("passfd accept", "err", err)
			}
			s.closeAll()
			return
		}
		port, ok := PortOf(c.RemoteAddr())
		if !ok {
			c.Close()
			continue
		}
		s.add(port, c)
	}
}

// PortOf is the port a peer connected from: a vsock peer's port, or for a
// unix peer (tests) the number in the name it bound, "@passfd-PORT" or
// "@passfd-PORT-SUFFIX" (abstract names are shared by every process in the
// network namespace: the suffix keeps concurrent tests apart).
func PortOf(a net.Addr) (uint32, bool) {
	switch a := a.(type) {
	case *vsock.Addr:
		return a.Port, true
	case *net.UnixAddr:
		rest, ok := strings.CutPrefix(a.Name, "@passfd-")
		if !ok {
			return 0, false
		}
		num, _, _ := strings.Cut(rest, "-")
		if p, err := strconv.ParseUint(num, 10, 32); err == nil {
			return uint32(p), true
		}
	}
	return 0, false
}

func (s *Streams) add(port uint32, c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, dup := s.pending[port]; dup {
		old.Close() // a newer connection from the same port replaces it
	} else {
		s.order = append(s.order, port)
	}
	s.pending[port] = c
	for len(s.order) > MaxPending {
		oldest := s.order[0]
		s.order = s.order[1:]
		if c, ok := s.pending[oldest]; ok {
			c.Close()
			delete(s.pending, oldest)
		}
	}
	close(s.arrived)
	s.arrived = make(chan struct{})
}

func (s *Streams) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p, c := range s.pending {
		c.Close()
		delete(s.pending, p)
	}
	s.order = nil
}

// Take removes the connection from port and returns it as a blocking file
// for a process's stdio, waiting up to StreamTimeout for it to arrive.
// Port 0 is no stream (nil, nil).
func (s *Streams) Take(ctx context.Context, port uint32) (*os.File, error) {
	if port == 0 {
		return nil, nil
	}
	timeout := time.NewTimer(StreamTimeout)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		c, ok := s.pending[port]
		arrived := s.arrived
		if ok {
			delete(s.pending, port)
			for i, p := range s.order {
				if p == port {
					s.order = append(s.order[:i], s.order[i+1:]...)
					break
				}
			}
		}
		s.mu.Unlock()
		if ok {
			return fileOf(c)
		}
		select {
		case <-arrived:
		case <-timeout.C:
			return nil, errdefs.Errorf(errdefs.ErrNotFound, "no passfd stream from port %d within %v", port, StreamTimeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// fileOf turns a connection into a blocking file of its own and closes
// the connection: the process that gets the file must not see EAGAIN.
func fileOf(c net.Conn) (*os.File, error) {
	defer c.Close()
	sc, ok := c.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return nil, fmt.Errorf("passfd: a %T has no file descriptor", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup := -1
	var derr error
	if err := rc.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("passfd: dup: %w", derr)
	}
	// The dup shares the connection's file status flags: make it blocking
	// for the process (the agent's copy is closed just below).
	if err := unix.SetNonblock(dup, false); err != nil {
		unix.Close(dup)
		return nil, fmt.Errorf("passfd: blocking: %w", err)
	}
	return os.NewFile(uintptr(dup), "passfd"), nil
}

// Ports are the stream ports a request names.
type Ports struct{ Stdin, Stdout, Stderr uint32 }

// Any reports whether any stream is named.
func (p Ports) Any() bool { return p.Stdin != 0 || p.Stdout != 0 || p.Stderr != 0 }
