package initd

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/mdlayher/vsock"
)

// LogSink is the agent's log destination for agent.log_vport: it listens on
// a vsock port and streams the log to the connected host. Lines written
// before the first connection are kept (up to MaxBuffered bytes, oldest
// dropped) and sent when it arrives. A host that stops reading cannot stall
// the agent: a write that takes longer than WriteTimeout drops the
// connection and the sink waits for the next one.
type LogSink struct {
	ln           net.Listener
	mu           sync.Mutex
	conn         net.Conn
	buf          []byte
	dropped      int
	MaxBuffered  int
	WriteTimeout time.Duration
}

// NewLogSink listens on vsock port and accepts host connections until ctx
// ends.
func NewLogSink(ctx context.Context, port uint32) (*LogSink, error) {
	ln, err := vsock.Listen(port, nil)
	if err != nil {
		return nil, err
	}
	return NewLogSinkListener(ctx, ln), nil
}

// NewLogSinkListener is NewLogSink on any listener (tests use Unix sockets).
func NewLogSinkListener(ctx context.Context, ln net.Listener) *LogSink {
	s := &LogSink{ln: ln, MaxBuffered: 1 << 20, WriteTimeout: 2 * time.Second}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go s.acceptLoop()
	return s
}

func (s *LogSink) acceptLoop() {
	defer func() { _ = recover() }() // a logging sink must never take init down
	for {
		c, err := s.ln.Accept()
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
	s.buf = append(s.buf, p...)
	if over := len(s.buf) - s.MaxBuffered; over > 0 {
		// Drop whole lines from the front.
		cut := over
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
	return s.ln.Close()
}

// Handler returns a JSON slog handler writing to the sink.
func (s *LogSink) Handler(level slog.Leveler) slog.Handler {
	return slog.NewJSONHandler(s, &slog.HandlerOptions{Level: level})
}
