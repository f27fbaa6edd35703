package rpc

import (
	"context"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/wren-vm/wren/protocols/agentpb"
)

// WriteStdin implements grpc.AgentService.
func (a *Agent) WriteStdin(ctx context.Context, req *agentpb.WriteStreamRequest) (*agentpb.WriteStreamResponse, error) {
	sb, err := a.pod("WriteStdin")
	if err != nil {
		return nil, err
	}
	return reply(sb.WriteStdin(ctx, req))
}

// ReadStdout implements grpc.AgentService.
func (a *Agent) ReadStdout(ctx context.Context, req *agentpb.ReadStreamRequest) (*agentpb.ReadStreamResponse, error) {
	sb, err := a.pod("ReadStdout")
	if err != nil {
		return nil, err
	}
	return reply(sb.ReadStdout(ctx, req))
}

// ReadStderr implements grpc.AgentService.
func (a *Agent) ReadStderr(ctx context.Context, req *agentpb.ReadStreamRequest) (*agentpb.ReadStreamResponse, error) {
	sb, err := a.pod("ReadStderr")
	if err != nil {
		return nil, err
	}
	return reply(sb.ReadStderr(ctx, req))
}

// CloseStdin implements grpc.AgentService.
func (a *Agent) CloseStdin(ctx context.Context, req *agentpb.CloseStdinRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("CloseStdin")
	if err != nil {
		return nil, err
	}
	return empty(sb.CloseStdin(ctx, req))
}

// TtyWinResize implements grpc.AgentService.
func (a *Agent) TtyWinResize(ctx context.Context, req *agentpb.TtyWinResizeRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("TtyWinResize")
	if err != nil {
		return nil, err
	}
	return empty(sb.TtyWinResize(ctx, req))
}
