package sandbox

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
// against the descriptor by a test). Nothing uses it since spliced replies
// name their field (agent/rpc's ReadStdout); it can go, with its test,
// once this package no longer speaks protobuf.
const readStreamDataField = 1

// ReadOutput is ReadStdout or ReadStderr for a caller that can send output
// from its pipe (replysplice): large output is left in the process's pipe
// and comes back as pipe, which the caller closes once it is sent; the
// stream stays locked to other readers until then. Other output comes back
// as data; neither, and a nil error, is EOF.
func (s *Sandbox) ReadOutput(ctx context.Context, req *pb.ReadStreamRequest, which stdio.Stream) (data []byte, pipe *replysplice.Pipe, err error) {
	c, err := s.container(req.GetContainerId())
	if err != nil {
		return nil, nil, err
	}
	data, pipe, err = c.ReadSpliceable(ctx, req.GetExecId(), which, int(req.GetLen()))
	if errors.Is(err, io.EOF) {
		return nil, nil, nil
	}
	return data, pipe, toStatus(err)
}

func (s *Sandbox) read(ctx context.Context, req *pb.ReadStreamRequest, which stdio.Stream) (*pb.ReadStreamResponse, error) {
	c, err := s.container(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	b, err := c.Read(ctx, req.GetExecId(), which, int(req.GetLen()))
	if errors.Is(err, io.EOF) {
		return &pb.ReadStreamResponse{}, nil
	}
	if err != nil {
		return nil, toStatus(err)
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
		return nil, toStatus(err)
	}
	n, err := p.Streams.Write(ctx, req.GetData())
	if errors.Is(err, stdio.ErrStdinClosed) {
		return nil, status.Errorf(codes.FailedPrecondition, "stdin of %s/%s is closed", req.GetContainerId(), req.GetExecId())
	}
	if err != nil {
		return nil, toStatus(err)
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
		return toStatus(err)
	}
	return toStatus(p.Streams.CloseStdin())
}

// TtyWinResize sets the terminal size; FailedPrecondition without a tty.
func (s *Sandbox) TtyWinResize(ctx context.Context, req *pb.TtyWinResizeRequest) error {
	c, err := s.container(req.GetContainerId())
	if err != nil {
		return err
	}
	p, err := c.Process(req.GetExecId())
	if err != nil {
		return toStatus(err)
	}
	if req.GetRow() > 0xffff || req.GetColumn() > 0xffff {
		return status.Errorf(codes.InvalidArgument, "window size %dx%d out of range", req.GetRow(), req.GetColumn())
	}
	err = p.Streams.Resize(uint16(req.GetRow()), uint16(req.GetColumn()))
	if errors.Is(err, stdio.ErrNoTerminal) {
		return status.Errorf(codes.FailedPrecondition, "process %s/%s has no terminal", req.GetContainerId(), req.GetExecId())
	}
	return toStatus(err)
}
