// Package server runs the agent's ttrpc server: it opens the listener for
// the configured address, serves the ttrpc wire protocol with panic
// recovery and request logging on every call, and shuts down gracefully
// when its context ends.
//
// Services register with RegisterService, as on a *ttrpc.Server; the
// descriptions come from the generated code (agentpb's <Service>ServiceDesc,
// protocols/cmd/protoc-gen-go-ttrpcdesc). Serving is the package's own
// (conn.go): one goroutine per connection reads frames, answers cheap
// methods inline and runs every other call on a goroutine of its own that
// writes its reply directly, so a call costs one scheduler hop or none
// instead of stock ttrpc's three. Setting WREN_AGENT_TTRPC=stock serves
// with the stock ttrpc server instead, for comparison.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wren-vm/wren/agent/replysplice"
)

// ShutdownGrace is how long in-flight calls may run after shutdown begins
// before their connections are closed under them.
const ShutdownGrace = 5 * time.Second

// ImplementationEnv selects the serving code, for same-binary comparisons:
// "stock" for containerd/ttrpc's server, "spawn" for the package's own
// without inline methods (every call on a goroutine of its own), anything
// else for the package's own as it ships.
const ImplementationEnv = "WREN_AGENT_TTRPC"

// inlineMethods are answered on the connection's reader goroutine: they
// never block, so running them there saves the scheduler hop to a handler
// goroutine. Everything else gets a goroutine, so that a call that waits
// (WaitProcess, ReadStdout) never holds up the calls behind it.
var inlineMethods = []string{"/grpc.Health/Check", "/grpc.Health/Version"}

// Server is a ttrpc server with the agent's panic recovery and logging.
type Server struct {
	log *slog.Logger
	// stock serves with containerd/ttrpc's server and spawn runs every
	// call on its own goroutine (ImplementationEnv).
	stock, spawn bool
	// tracePath receives an execution trace while serving ("": none).
	tracePath string

	// active counts running calls; draining is set when shutdown begins,
	// after which the call that brings active to zero signals drained.
	active   atomic.Int64
	draining atomic.Bool
	drained  chan struct{}

	mu       sync.Mutex
	conns    map[*conn]struct{}
	services map[string]*ttrpc.ServiceDesc
}

// Options configure a Server.
type Options struct {
	Log *slog.Logger
	// Implementation selects the serving code, for same-binary
	// comparisons (the agent takes it from ImplementationEnv): "stock",
	// "spawn", or "" for the package's own as it ships.
	Implementation string
	// TracePath, when set, is where a Go execution trace of the serving
	// life goes (the agent takes it from TraceEnv).
	TracePath string
}

// New makes a server; register services before Serve.
func New(o Options) (*Server, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		log: log, stock: o.Implementation == "stock", spawn: o.Implementation == "spawn", tracePath: o.TracePath,
		drained: make(chan struct{}, 1), conns: make(map[*conn]struct{}),
		services: make(map[string]*ttrpc.ServiceDesc),
	}, nil
}

// RegisterService registers a service under its full name (what ttrpc
// routes on), as *ttrpc.Server.RegisterService does; the generated
// <Service>ServiceDesc functions describe the agent's. Services registered
// after Serve has begun are not served. A name registered twice panics, as
// with ttrpc: it is a programming error.
func (s *Server) RegisterService(name string, desc *ttrpc.ServiceDesc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.services[name]; ok {
		panic(fmt.Sprintf("duplicate service %s registered", name))
	}
	s.services[name] = desc
}

// Register registers a service of unary methods, as *ttrpc.Server.Register.
func (s *Server) Register(name string, methods map[string]ttrpc.Method) {
	s.RegisterService(name, &ttrpc.ServiceDesc{Methods: methods})
}

// registered returns the registered services.
func (s *Server) registered() map[string]*ttrpc.ServiceDesc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.services)
}

// Serve serves ln until ctx ends, then stops accepting, lets in-flight
// calls finish for up to ShutdownGrace and closes the remaining connections.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	defer startTrace(s.log, s.tracePath)()
	if s.stock {
		return s.serveStock(ctx, ln)
	}
	inline := inlineMethods
	if s.spawn {
		inline = nil
	}
	methods, err := buildMethods(s.registered(), inline)
	if err != nil {
		s.log.Warn("serving with the stock ttrpc server", "reason", err)
		return s.serveStock(ctx, ln)
	}
	accepted := make(chan error, 1)
	var conns sync.WaitGroup
	go func() { accepted <- s.acceptLoop(ln, methods, &conns) }()
	select {
	case err := <-accepted:
		s.closeConns()
		conns.Wait()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	ln.Close() // no new connections while in-flight calls finish
	if err := <-accepted; err != nil {
		// The close above ends the loop with this error: expected.
		s.log.Debug("accept loop ended", "err", err)
	}
	s.drain()
	s.closeConns()
	conns.Wait()
	return nil
}

// acceptLoop serves each connection on its own goroutine until ln fails;
// it backs off on temporary errors (out of fds) instead of giving up.
func (s *Server) acceptLoop(ln net.Listener, methods methodTable, conns *sync.WaitGroup) error {
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				backoff = min(max(2*backoff, time.Millisecond), time.Second)
				s.log.Error("accept failed; backing off", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		backoff = 0
		c := newConn(s, nc, methods)
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		conns.Add(1)
		go func() {
			defer conns.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// drain waits up to ShutdownGrace for the running calls to finish.
func (s *Server) drain() {
	s.draining.Store(true)
	grace := time.NewTimer(ShutdownGrace)
	defer grace.Stop()
	for s.active.Load() > 0 {
		select {
		case <-s.drained:
		case <-grace.C:
			s.log.Warn("in-flight calls still running after grace period; closing connections", "calls", s.active.Load())
			return
		}
	}
}

// closeConns closes every open connection; their readers then end.
func (s *Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.nc.Close()
	}
}

func (s *Server) callStarted() { s.active.Add(1) }

func (s *Server) callDone() {
	if s.active.Add(-1) == 0 && s.draining.Load() {
		select {
		case s.drained <- struct{}{}:
		default:
		}
	}
}

// invoke runs one handler: it turns a panic into an Internal error so that
// one bad request can never take the agent (and, as PID 1, the VM) down,
// and logs each call at debug level.
func (s *Server) invoke(ctx context.Context, m *method, unmarshal func(any) error) (resp any, err error) {
	var start time.Time
	debugLog := s.log.Enabled(ctx, slog.LevelDebug)
	if debugLog {
		start = time.Now()
	}
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, s.recovered(m.full, r)
		}
		if debugLog {
			s.log.LogAttrs(ctx, slog.LevelDebug, "rpc", slog.String("method", m.full),
				slog.Duration("took", time.Since(start)), slog.String("code", status.Code(err).String()))
		}
	}()
	return m.fn(ctx, unmarshal)
}

func (s *Server) recovered(method string, r any) error {
	s.log.Error("handler panic recovered", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "%s: internal error: panic: %v", method, r)
}

// serveStock serves with containerd/ttrpc's own server, given the
// registered services.
func (s *Server) serveStock(ctx context.Context, ln net.Listener) error {
	reg, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(s.intercept))
	if err != nil {
		return fmt.Errorf("new ttrpc server: %w", err)
	}
	for name, desc := range s.registered() {
		reg.RegisterService(name, desc)
	}
	errc := make(chan error, 1)
	// ttrpc drops every connection when its Serve context ends, so serve
	// on a context of our own and end it through Shutdown instead.
	go func() { errc <- reg.Serve(context.WithoutCancel(ctx), ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, ttrpc.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	ln.Close()
	s.drain()
	// The calls are done (drain); what is left is their replies on the
	// wire, which Shutdown waits for. It returns as soon as they are out.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), ShutdownGrace)
	defer cancel()
	if err := reg.Shutdown(shutdownCtx); err != nil && !errors.Is(err, net.ErrClosed) {
		s.log.Warn("graceful shutdown incomplete; closing connections", "err", err)
	}
	err = reg.Close()
	if serr := <-errc; serr != nil {
		// The close above ends the stock server with this error: expected.
		s.log.Debug("stock server ended", "err", serr)
	}
	return err
}

// intercept is the stock server's interceptor: the same recovery and
// logging as invoke. The stock server sends only messages, so a reply
// whose data waits in a pipe (replysplice) has it read in here.
func (s *Server) intercept(ctx context.Context, unmarshal ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, fn ttrpc.Method) (any, error) {
	s.callStarted()
	defer s.callDone()
	resp, err := s.invoke(ctx, &method{full: info.FullMethod, fn: fn}, unmarshal)
	if r, ok := resp.(*replysplice.Reply); ok && r != nil {
		defer r.Close()
		if err != nil {
			return nil, err
		}
		if resp, err = r.ReadIn(); err != nil {
			return nil, status.Errorf(codes.Internal, "ttrpc: %v", err)
		}
	}
	return resp, err
}
