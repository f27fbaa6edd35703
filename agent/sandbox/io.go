package sandbox

import (
	"context"
	"errors"
	"io"

	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/agent/replysplice"
	"github.com/wren-vm/wren/agent/stdio"
)

// Read blocks until process execID of container id wrote something to
// which, and returns at most max bytes of it; no data and a nil error is
// EOF.
func (s *Sandbox) Read(ctx context.Context, id, execID string, which stdio.Stream, max int) ([]byte, error) {
	c, err := s.container(id)
	if err != nil {
		return nil, err
	}
	b, err := c.Read(ctx, execID, which, max)
	if errors.Is(err, io.EOF) {
		return nil, nil
	}
	return b, err
}

// ReadOutput is Read for a caller that can send output from its pipe
// (replysplice): large output is left in the process's pipe and comes back
// as pipe, which the caller closes once it is sent; the stream stays locked
// to other readers until then. Other output comes back as data; neither,
// and a nil error, is EOF.
func (s *Sandbox) ReadOutput(ctx context.Context, id, execID string, which stdio.Stream, max int) (data []byte, pipe *replysplice.Pipe, err error) {
	c, err := s.container(id)
	if err != nil {
		return nil, nil, err
	}
	data, pipe, err = c.ReadSpliceable(ctx, execID, which, max)
	if errors.Is(err, io.EOF) {
		return nil, nil, nil
	}
	return data, pipe, err
}

// WriteStdin writes data to the process's stdin and returns how much it
// took.
func (s *Sandbox) WriteStdin(ctx context.Context, id, execID string, data []byte) (int, error) {
	c, err := s.container(id)
	if err != nil {
		return 0, err
	}
	p, err := c.Process(execID)
	if err != nil {
		return 0, err
	}
	n, err := p.Streams.Write(ctx, data)
	if errors.Is(err, stdio.ErrStdinClosed) {
		return 0, errdefs.Errorf(errdefs.ErrFailedPrecondition, "stdin of %s/%s is closed", id, execID)
	}
	return n, err
}

// CloseStdin closes the process's stdin.
func (s *Sandbox) CloseStdin(ctx context.Context, id, execID string) error {
	c, err := s.container(id)
	if err != nil {
		return err
	}
	p, err := c.Process(execID)
	if err != nil {
		return err
	}
	return p.Streams.CloseStdin()
}

// TtyWinResize sets the terminal size; FailedPrecondition without a tty.
func (s *Sandbox) TtyWinResize(ctx context.Context, id, execID string, rows, cols uint32) error {
	c, err := s.container(id)
	if err != nil {
		return err
	}
	p, err := c.Process(execID)
	if err != nil {
		return err
	}
	if rows > 0xffff || cols > 0xffff {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "window size %dx%d out of range", rows, cols)
	}
	err = p.Streams.Resize(uint16(rows), uint16(cols))
	if errors.Is(err, stdio.ErrNoTerminal) {
		return errdefs.Errorf(errdefs.ErrFailedPrecondition, "process %s/%s has no terminal", id, execID)
	}
	return err
}
