package rpc

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/agent/passfd"
	"github.com/wren-vm/wren/agent/sandbox"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// CreateContainer implements grpc.AgentService.
func (a *Agent) CreateContainer(ctx context.Context, req *agentpb.CreateContainerRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("CreateContainer")
	if err != nil {
		return nil, err
	}
	spec := ocispec.ToSpec(req.GetOCI())
	storages, err := volumesFromPB(req.GetStorages())
	if err != nil {
		return nil, toStatus(err)
	}
	devices, err := devicesFromPB(req.GetDevices())
	if err != nil {
		return nil, toStatus(err)
	}
	return empty(sb.CreateContainer(ctx, sandbox.ContainerConfig{
		ID: req.GetContainerId(), ExecID: req.GetExecId(), Spec: spec,
		Storages: storages, Devices: devices, SandboxPidns: req.GetSandboxPidns(),
		User: userFromPB(req.GetStringUser()), SharedMounts: sharedMountsFromPB(req.GetSharedMounts()),
		Stdio: passfd.Ports{Stdin: req.GetStdinPort(), Stdout: req.GetStdoutPort(), Stderr: req.GetStderrPort()},
	}))
}

// StartContainer implements grpc.AgentService.
func (a *Agent) StartContainer(ctx context.Context, req *agentpb.StartContainerRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("StartContainer")
	if err != nil {
		return nil, err
	}
	return empty(sb.StartContainer(ctx, req.GetContainerId()))
}

// RemoveContainer implements grpc.AgentService.
func (a *Agent) RemoveContainer(ctx context.Context, req *agentpb.RemoveContainerRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("RemoveContainer")
	if err != nil {
		return nil, err
	}
	return empty(sb.RemoveContainer(ctx, req.GetContainerId(), time.Duration(req.GetTimeout())*time.Second))
}

// UpdateContainer implements grpc.AgentService.
func (a *Agent) UpdateContainer(ctx context.Context, req *agentpb.UpdateContainerRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("UpdateContainer")
	if err != nil {
		return nil, err
	}
	return empty(sb.UpdateContainer(ctx, req.GetContainerId(), ocispec.ToResources(req.GetResources())))
}

// StatsContainer implements grpc.AgentService.
func (a *Agent) StatsContainer(ctx context.Context, req *agentpb.StatsContainerRequest) (*agentpb.StatsContainerResponse, error) {
	sb, err := a.pod("StatsContainer")
	if err != nil {
		return nil, err
	}
	st, err := sb.StatsContainer(ctx, req.GetContainerId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentpb.StatsContainerResponse{CgroupStats: statsToProto(st)}, nil
}

// PauseContainer implements grpc.AgentService.
func (a *Agent) PauseContainer(ctx context.Context, req *agentpb.PauseContainerRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("PauseContainer")
	if err != nil {
		return nil, err
	}
	return empty(sb.PauseContainer(ctx, req.GetContainerId()))
}

// ResumeContainer implements grpc.AgentService.
func (a *Agent) ResumeContainer(ctx context.Context, req *agentpb.ResumeContainerRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("ResumeContainer")
	if err != nil {
		return nil, err
	}
	return empty(sb.ResumeContainer(ctx, req.GetContainerId()))
}
