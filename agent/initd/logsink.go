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

	"github.com/wren-vm/wren/agent/hostvsock"
)

// LogSink is the agent's log destination for agent.log_vport: it streams
// the log to a host connected on a vsock port.
//
// Write never blocks on I/O: it appends to a buffer (at most MaxBuffered
// bytes; the oldest lines are dropped and counted) and a writer goroutine
// sends the buffer to the connected host, or to the Fallback writer. slog
// handlers hold their own lock across Write, so a blocking Write would stall
// every logging goroutine of the agent behind a slow host. A host that stops
// reading is dropped after WriteTimeout and the sink waits for the next one.
//
// As PID 1 the vsock transport is a module, so the sink starts as a buffer
// (NewLogBuffer) and listens once modules are loaded (ListenVsock); if that
// fails, Fallback sends everything to the console instead.
type LogSink struct {
	MaxBuffered  int
	WriteTimeout time.Duration

	mu       sync.Mutex
	ln       net.Listener
	conn     net.Conn
	fallback io.Writer
	buf      []byte
	dropped  int
	writing  bool          // the writer goroutine is running
	wake     chan struct{} // 1-slot: data or a destination arrived
	done     chan struct{}
	closed   bool
}

// NewLogBuffer returns a sink that buffers until Serve, ListenVsock or
// Fallback.
func NewLogBuffer() *LogSink {
	return &LogSink{
		MaxBuffered:  1 << 20,
		WriteTimeout: 2 * time.Second,
		wake:         make(chan struct{}, 1),
		done:         make(chan struct{}),
	}
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
	// Only the host may read the log: it can hold what a container must
	// not see (other containers' ids, paths and errors).
	ln, err := hostvsock.Listen(hostvsock.AnyCID, port, slog.New(s.Handler(slog.LevelWarn)))
	if err != nil {
		return fmt.Errorf("log stream: listen on vsock port %d: %w", port, err)
	}
	s.Serve(ctx, ln)
	return nil
}

// Serve accepts log readers on ln until ctx ends or the sink is closed.
func (s *LogSink) Serve(ctx context.Context, ln net.Listener) {
	s.mu.Lock()
	s.ln = ln
	s.startWriterLocked()
	s.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-s.done:
		}
		ln.Close()
	}()
	go s.acceptLoop(ln)
}

// Fallback sends what is buffered, and everything after it, to w.
func (s *LogSink) Fallback(w io.Writer) {
	s.mu.Lock()
	s.fallback = w
	s.startWriterLocked()
	s.mu.Unlock()
	s.signal()
}

func (s *LogSink) startWriterLocked() {
	if !s.writing && !s.closed {
		s.writing = true
		go s.writeLoop()
	}
}

func (s *LogSink) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *LogSink) acceptLoop(ln net.Listener) {
	// The sink cannot log its own panic to itself; Recover writes the
	// reason to the console and powers off as for any other goroutine.
	defer Recover(nil, "log sink")
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
		if s.dropped > 0 {
			note := `{"level":"WARN","msg":"log lines dropped before the host connected","count":` + strconv.Itoa(s.dropped) + "}\n"
			s.buf = append([]byte(note), s.buf...)
			s.dropped = 0
		}
		s.mu.Unlock()
		s.signal()
	}
}

// writeLoop moves the buffer to the current destination, outside the lock.
func (s *LogSink) writeLoop() {
	defer Recover(nil, "log sink writer")
	for {
		select {
		case <-s.wake:
		case <-s.done:
			return
		}
		for {
			s.mu.Lock()
			conn, fb := s.conn, s.fallback
			if len(s.buf) == 0 || (conn == nil && fb == nil) {
				s.mu.Unlock()
				break
			}
			data := s.buf
			s.buf = nil
			s.mu.Unlock()
			if conn == nil {
				_, _ = fb.Write(data)
				continue
			}
			_ = conn.SetWriteDeadline(time.Now().Add(s.WriteTimeout))
			if _, err := conn.Write(data); err != nil {
				// A stalled or gone reader: drop it, keep logging.
				conn.Close()
				s.mu.Lock()
				if s.conn == conn {
					s.conn = nil
				}
				s.mu.Unlock()
			}
		}
	}
}

// Write implements io.Writer for slog handlers; it never blocks on I/O and
// never fails.
func (s *LogSink) Write(p []byte) (int, error) {
	s.mu.Lock()
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
	s.mu.Unlock()
	s.signal()
	return len(p), nil
}

// Close gives the writer up to WriteTimeout to deliver what is buffered
// (the last lines before a power-off matter most), then stops listening,
// the writer and the current connection.
func (s *LogSink) Close() error {
	s.signal()
	for deadline := time.Now().Add(s.WriteTimeout); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		s.mu.Lock()
		idle := len(s.buf) == 0 || (s.conn == nil && s.fallback == nil)
		s.mu.Unlock()
		if idle {
			break
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.done)
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
