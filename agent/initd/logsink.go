package initd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/mdlayher/vsock"
)

// LogSink is the agent's log destination for agent.log_vport: it streams
// the log to a host connected on a vsock port. Lines written before the
// first connection are kept (up to MaxBuffered bytes, oldest dropped) and
// sent when it arrives. A host that stops reading cannot stall the agent: a
// write that takes longer than WriteTimeout drops the connection and the
// sink waits for the next one.
//
// As PID 1 the vsock transport is a module, so the sink starts as a buffer
// (NewLogBuffer) and listens once modules are loaded (ListenVsock); if that
// fails, Fallback sends everything to the console instead.
type LogSink struct {
	ln           net.Listener
	mu           sync.Mutex
	conn         net.Conn
	fallback     io.Writer
	buf          []byte
	dropped      int
	MaxBuffered  int
	WriteTimeout time.Duration
}

// NewLogBuffer returns a sink that buffers until Serve, ListenVsock or
// Fallback.
func NewLogBuffer() *LogSink {
	return &LogSink{MaxBuffered: 1 << 20, WriteTimeout: 2 * time.Second}
}

// NewLogSink listens on vsock port and accepts host connections until ctx
// ends.
func NewLogSink(ctx context.Context, port uint32) (*LogSink, error) {
	s := NewLogBuffer()
	if err := s.ListenVsock(ctx, port); err != nil {
		return nil, err
	}
	return s, nil
}

// NewLogSinkListener is NewLogSink on any listener (tests use Unix sockets).
func NewLogSinkListener(ctx context.Context, ln net.Listener) *LogSink {
	s := NewLogBuffer()
	s.Serve(ctx, ln)
	return s
}

// ListenVsock starts serving the log on vsock port.
func (s *LogSink) ListenVsock(ctx context.Context, port uint32) error {
	ln, err := vsock.Listen(port, nil)
	if err != nil {
		return fmt.Errorf("log stream: listen on vsock port %d: %w", port, err)
	}
	s.Serve(ctx, ln)
	return nil
}

// Serve accepts log readers on ln until ctx ends.
func (s *LogSink) Serve(ctx context.Context, ln net.Listener) {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go s.acceptLoop()
}

// Fallback writes what is buffered to w, and everything after it.
func (s *LogSink) Fallback(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fallback = w
	_, _ = w.Write(s.buf)
	s.buf = nil
}

func (s *LogSink) acceptLoop() {
	// The sink cannot log its own panic to itself; Recover writes the
	// reason to the console and powers off as for any other goroutine.
	defer Recover(nil, "log sink")
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.conn != nil {
			// One log reader at a time, as Kata: the newest wins.
			s.conn.Close()
		}
		s.conn = c
		pending := s.buf
		s.buf = nil
		if s.dropped > 0 {
			pending = append([]byte(`{"level":"WARN","msg":"log lines dropped before the host connected","count":`+strconv.Itoa(s.dropped)+"}\n"), pending...)
			s.dropped = 0
		}
		if len(pending) > 0 {
			s.writeLocked(pending)
		}
		s.mu.Unlock()
	}
}

// Write implements io.Writer for slog handlers; it never fails.
func (s *LogSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		s.writeLocked(p)
		return len(p), nil
	}
	if s.fallback != nil {
		_, _ = s.fallback.Write(p)
		return len(p), nil
	}
	s.buf = append(s.buf, p...)
	if len(s.buf) > s.MaxBuffered {
		// Drop whole lines from the front, down to three quarters of the
		// limit so the copy is paid once per quarter buffer, not per line.
		cut := len(s.buf) - s.MaxBuffered*3/4
		for cut < len(s.buf) && s.buf[cut-1] != '\n' {
			cut++
		}
		s.dropped += bytes.Count(s.buf[:cut], []byte{'\n'})
		s.buf = append([]byte(nil), s.buf[cut:]...)
	}
	return len(p), nil
}

func (s *LogSink) writeLocked(p []byte) {
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.WriteTimeout))
	if _, err := s.conn.Write(p); err != nil {
		s.conn.Close()
		s.conn = nil
	}
}

// Close stops listening and closes the current connection.
func (s *LogSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn != nil {
		s.conn.Close()
		s.conn = nil
	}
	if s.ln == nil {
		return nil
	}
	return s.ln.Close()
}

// Handler returns a JSON slog handler writing to the sink.
func (s *LogSink) Handler(level slog.Leveler) slog.Handler {
	return slog.NewJSONHandler(s, &slog.HandlerOptions{Level: level})
}
