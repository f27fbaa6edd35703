package rpc

import (
	"context"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/wren-vm/wren/agent/replysplice"
	"github.com/wren-vm/wren/agent/sandbox"
	"github.com/wren-vm/wren/agent/stdio"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// WriteStdin implements grpc.AgentService.
func (a *Agent) WriteStdin(ctx context.Context, req *agentpb.WriteStreamRequest) (*agentpb.WriteStreamResponse, error) {
	sb, err := a.pod("WriteStdin")
	if err != nil {
		return nil, err
	}
	n, err := sb.WriteStdin(ctx, req.GetContainerId(), req.GetExecId(), req.GetData())
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentpb.WriteStreamResponse{Len: uint32(n)}, nil
}

// ReadStdout implements grpc.AgentService.
func (a *Agent) ReadStdout(ctx context.Context, req *agentpb.ReadStreamRequest) (*agentpb.ReadStreamResponse, error) {
	sb, err := a.pod("ReadStdout")
	if err != nil {
		return nil, err
	}
	return a.read(ctx, sb, req, stdio.Stdout)
}

// ReadStderr implements grpc.AgentService.
func (a *Agent) ReadStderr(ctx context.Context, req *agentpb.ReadStreamRequest) (*agentpb.ReadStreamResponse, error) {
	sb, err := a.pod("ReadStderr")
	if err != nil {
		return nil, err
	}
	return a.read(ctx, sb, req, stdio.Stderr)
}

// read is ReadStdout or ReadStderr, with the output always in the reply.
func (a *Agent) read(ctx context.Context, sb *sandbox.Sandbox, req *agentpb.ReadStreamRequest, which stdio.Stream) (*agentpb.ReadStreamResponse, error) {
	data, err := sb.Read(ctx, req.GetContainerId(), req.GetExecId(), which, int(req.GetLen()))
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentpb.ReadStreamResponse{Data: data}, nil
}

// SpliceReads replaces ReadStdout and ReadStderr in desc, grpc.AgentService's
// description (agentpb.AgentServiceServiceDesc), by methods whose reply may
// leave large output in the process's pipe: a *replysplice.Reply, which
// agent/server sends from the pipe to its socket. Only agent/server knows
// that type, so only a description registered there may have them.
func (a *Agent) SpliceReads(desc *ttrpc.ServiceDesc) {
	desc.Methods["ReadStdout"] = a.splicedRead("ReadStdout", stdio.Stdout)
	desc.Methods["ReadStderr"] = a.splicedRead("ReadStderr", stdio.Stderr)
}

// splicedRead is ReadStdout or ReadStderr, for SpliceReads.
func (a *Agent) splicedRead(method string, which stdio.Stream) ttrpc.Method {
	return func(ctx context.Context, unmarshal func(any) error) (any, error) {
		var req agentpb.ReadStreamRequest
		if err := unmarshal(&req); err != nil {
			return nil, err
		}
		sb, err := a.pod(method)
		if err != nil {
			return nil, err
		}
		data, pipe, err := sb.ReadOutput(ctx, req.GetContainerId(), req.GetExecId(), which, int(req.GetLen()))
		switch {
		case err != nil:
			return nil, toStatus(err)
		case pipe != nil:
			return &replysplice.Reply{Message: &agentpb.ReadStreamResponse{}, Field: "data", Data: pipe}, nil
		}
		return &agentpb.ReadStreamResponse{Data: data}, nil
	}
}

// CloseStdin implements grpc.AgentService.
func (a *Agent) CloseStdin(ctx context.Context, req *agentpb.CloseStdinRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("CloseStdin")
	if err != nil {
		return nil, err
	}
	return empty(sb.CloseStdin(ctx, req.GetContainerId(), req.GetExecId()))
}

// TtyWinResize implements grpc.AgentService.
func (a *Agent) TtyWinResize(ctx context.Context, req *agentpb.TtyWinResizeRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("TtyWinResize")
	if err != nil {
		return nil, err
	}
	return empty(sb.TtyWinResize(ctx, req.GetContainerId(), req.GetExecId(), req.GetRow(), req.GetColumn()))
}
