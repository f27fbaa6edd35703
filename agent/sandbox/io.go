package sandbox

import (
	"context"
	"errors"
	"io"

	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/agent/replysplice"
	"github.com/wren-vm/wren/agent/stdio"
	pb "github.com/wren-vm/wren/protocols/agentpb"
)

// ReadStdout blocks until the process wrote something; empty data is EOF.
func (s *Sandbox) ReadStdout(ctx context.Context, req *pb.ReadStreamRequest) (*pb.ReadStreamResponse, error) {
	return s.read(ctx, req, stdio.Stdout)
}

// ReadStderr is ReadStdout for stderr.
func (s *Sandbox) ReadStderr(ctx context.Context, req *pb.ReadStreamRequest) (*pb.ReadStreamResponse, error) {
	return s.read(ctx, req, stdio.Stderr)
}

// readStreamDataField is ReadStreamResponse.data's field number (checked
// against the descriptor by a test). A constant: reading it from the
// descriptor at package initialisation built agent.proto's lazy descriptors,
// 125 KB and 0.8 ms in every process start, init re-execs included.
const readStreamDataField = 1

func (s *Sandbox) read(ctx context.Context, req *pb.ReadStreamRequest, which stdio.Stream) (*pb.ReadStreamResponse, error) {
	c, err := s.container(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	// The data may go from the pipe to the connection without a copy here:
	// the reply below leaves the field empty for the server to fill.
	replysplice.Accept(ctx, readStreamDataField)
	b, err := c.Read(ctx, req.GetExecId(), which, int(req.GetLen()))
	if errors.Is(err, io.EOF) {
		return &pb.ReadStreamResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	return &pb.ReadStreamResponse{Data: b}, nil
}

// WriteStdin writes to the process's stdin; empty data closes it.
func (s *Sandbox) WriteStdin(ctx context.Context, req *pb.WriteStreamRequest) (*pb.WriteStreamResponse, error) {
	c, err := s.container(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	p, err := c.Process(req.GetExecId())
	if err != nil {
		return nil, err
	}
	n, err := p.Streams.Write(ctx, req.GetData())
	if errors.Is(err, stdio.ErrStdinClosed) {
		return nil, errdefs.Errorf(errdefs.ErrFailedPrecondition, "stdin of %s/%s is closed", req.GetContainerId(), req.GetExecId())
	}
	if err != nil {
		return nil, err
	}
	return &pb.WriteStreamResponse{Len: uint32(n)}, nil
}

// CloseStdin closes the process's stdin.
func (s *Sandbox) CloseStdin(ctx context.Context, req *pb.CloseStdinRequest) error {
	c, err := s.container(req.GetContainerId())
	if err != nil {
		return err
	}
	p, err := c.Process(req.GetExecId())
	if err != nil {
		return err
	}
	return p.Streams.CloseStdin()
}

// TtyWinResize sets the terminal size; FailedPrecondition without a tty.
func (s *Sandbox) TtyWinResize(ctx context.Context, req *pb.TtyWinResizeRequest) error {
	c, err := s.container(req.GetContainerId())
	if err != nil {
		return err
	}
	p, err := c.Process(req.GetExecId())
	if err != nil {
		return err
	}
	if req.GetRow() > 0xffff || req.GetColumn() > 0xffff {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "window size %dx%d out of range", req.GetRow(), req.GetColumn())
	}
	err = p.Streams.Resize(uint16(req.GetRow()), uint16(req.GetColumn()))
	if errors.Is(err, stdio.ErrNoTerminal) {
		return errdefs.Errorf(errdefs.ErrFailedPrecondition, "process %s/%s has no terminal", req.GetContainerId(), req.GetExecId())
	}
	return err
}
