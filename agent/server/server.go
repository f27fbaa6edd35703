// Package server runs the agent's ttrpc server: it opens the listener for
// the configured address, wraps every handler in panic recovery and request
// logging, and shuts down gracefully when its context ends.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ShutdownGrace is how long in-flight calls may run after shutdown begins
// before their connections are closed under them.
const ShutdownGrace = 5 * time.Second

// Server is a ttrpc server with the agent's interceptors.
type Server struct {
	log *slog.Logger
	srv *ttrpc.Server
	// inflight counts running handlers. ttrpc's own Shutdown can close a
	// connection whose request has arrived but not yet been marked active,
	// so shutdown first waits for this count to drain.
	inflight sync.WaitGroup
}

// New makes a server; register services on TTRPC() before Serve.
func New(log *slog.Logger) (*Server, error) {
	s := &Server{log: log}
	srv, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(s.intercept))
	if err != nil {
		return nil, fmt.Errorf("new ttrpc server: %w", err)
	}
	s.srv = srv
	return s, nil
}

// TTRPC is the underlying server, for service registration.
func (s *Server) TTRPC() *ttrpc.Server { return s.srv }

// Serve serves ln until ctx ends, then stops accepting, lets in-flight
// calls finish for up to ShutdownGrace and closes the remaining connections.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	// ttrpc drops every connection when its Serve context ends, so serve
	// on a context of our own and end it through Shutdown instead.
	go func() { errc <- s.srv.Serve(context.WithoutCancel(ctx), ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, ttrpc.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	ln.Close() // no new connections while in-flight calls finish
	drained := make(chan struct{})
	go func() { s.inflight.Wait(); close(drained) }()
	grace := time.NewTimer(ShutdownGrace)
	defer grace.Stop()
	select {
	case <-drained:
	case <-grace.C:
		s.log.Warn("in-flight calls still running after grace period; closing connections")
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := s.srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, net.ErrClosed) {
		s.log.Warn("graceful shutdown incomplete; closing connections", "err", err)
	}
	err := s.srv.Close()
	<-errc
	return err
}

// intercept runs every unary call: it turns a handler panic into an
// Internal error so that one bad request can never take the agent (and, as
// PID 1, the VM) down, and logs each call at debug level.
func (s *Server) intercept(ctx context.Context, unmarshal ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, method ttrpc.Method) (resp any, err error) {
	s.inflight.Add(1)
	defer s.inflight.Done()
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("handler panic recovered", "method", info.FullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			resp, err = nil, status.Errorf(codes.Internal, "%s: internal error: panic: %v", info.FullMethod, r)
		}
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.LogAttrs(ctx, slog.LevelDebug, "rpc", slog.String("method", info.FullMethod),
				slog.Duration("took", time.Since(start)), slog.String("code", status.Code(err).String()))
		}
	}()
	return method(ctx, unmarshal)
}
