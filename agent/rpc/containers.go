package rpc

import (
	"context"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/wren-vm/wren/protocols/agentpb"
)

// CreateContainer implements grpc.AgentService.
func (a *Agent) CreateContainer(ctx context.Context, req *agentpb.CreateContainerRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("CreateContainer")
	if err != nil {
		return nil, err
	}
	return empty(sb.CreateContainer(ctx, req))
}

// StartContainer implements grpc.AgentService.
func (a *Agent) StartContainer(ctx context.Context, req *agentpb.StartContainerRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("StartContainer")
	if err != nil {
		return nil, err
	}
	return empty(sb.StartContainer(ctx, req))
}

// RemoveContainer implements grpc.AgentService.
func (a *Agent) RemoveContainer(ctx context.Context, req *agentpb.RemoveContainerRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("RemoveContainer")
	if err != nil {
		return nil, err
	}
	return empty(sb.RemoveContainer(ctx, req))
}

// UpdateContainer implements grpc.AgentService.
func (a *Agent) UpdateContainer(ctx context.Context, req *agentpb.UpdateContainerRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("UpdateContainer")
	if err != nil {
		return nil, err
	}
	return empty(sb.UpdateContainer(ctx, req))
}

// StatsContainer implements grpc.AgentService.
func (a *Agent) StatsContainer(ctx context.Context, req *agentpb.StatsContainerRequest) (*agentpb.StatsContainerResponse, error) {
	sb, err := a.pod("StatsContainer")
	if err != nil {
		return nil, err
	}
	return reply(sb.StatsContainer(ctx, req))
}

// PauseContainer implements grpc.AgentService.
func (a *Agent) PauseContainer(ctx context.Context, req *agentpb.PauseContainerRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("PauseContainer")
	if err != nil {
		return nil, err
	}
	return empty(sb.PauseContainer(ctx, req))
}

// ResumeContainer implements grpc.AgentService.
func (a *Agent) ResumeContainer(ctx context.Context, req *agentpb.ResumeContainerRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("ResumeContainer")
	if err != nil {
		return nil, err
	}
	return empty(sb.ResumeContainer(ctx, req))
}
