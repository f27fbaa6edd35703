package rpc

import (
	"context"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/agent/passfd"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// ExecProcess implements grpc.AgentService.
func (a *Agent) ExecProcess(ctx context.Context, req *agentpb.ExecProcessRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("ExecProcess")
	if err != nil {
		return nil, err
	}
	return empty(sb.ExecProcess(ctx, req.GetContainerId(), req.GetExecId(), ocispec.ToProcess(req.GetProcess()), userFromPB(req.GetStringUser()),
		passfd.Ports{Stdin: req.GetStdinPort(), Stdout: req.GetStdoutPort(), Stderr: req.GetStderrPort()}))
}

// SignalProcess implements grpc.AgentService.
func (a *Agent) SignalProcess(ctx context.Context, req *agentpb.SignalProcessRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("SignalProcess")
	if err != nil {
		return nil, err
	}
	return empty(sb.SignalProcess(ctx, req.GetContainerId(), req.GetExecId(), req.GetSignal()))
}

// WaitProcess implements grpc.AgentService.
func (a *Agent) WaitProcess(ctx context.Context, req *agentpb.WaitProcessRequest) (*agentpb.WaitProcessResponse, error) {
	sb, err := a.pod("WaitProcess")
	if err != nil {
		return nil, err
	}
	code, err := sb.WaitProcess(ctx, req.GetContainerId(), req.GetExecId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentpb.WaitProcessResponse{Status: code}, nil
}
