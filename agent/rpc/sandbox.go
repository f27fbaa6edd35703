package rpc

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/wren-vm/wren/agent/sandbox"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// pod returns the sandbox behind the pod RPCs.
func (a *Agent) pod(method string) (*sandbox.Sandbox, error) {
	if a.sandbox == nil {
		return nil, status.Errorf(codes.Unimplemented, "/grpc.AgentService/%s: this agent runs no containers", method)
	}
	return a.sandbox, nil
}

// empty is the reply of a call that returns nothing but an error.
func empty(err error) (*emptypb.Empty, error) {
	if err != nil {
		return nil, toStatus(err)
	}
	return &emptypb.Empty{}, nil
}

// CreateSandbox implements grpc.AgentService.
func (a *Agent) CreateSandbox(ctx context.Context, req *agentpb.CreateSandboxRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("CreateSandbox")
	if err != nil {
		return nil, err
	}
	storages, err := volumesFromPB(req.GetStorages())
	if err != nil {
		return nil, toStatus(err)
	}
	mods := make([]sandbox.KernelModule, 0, len(req.GetKernelModules()))
	for _, m := range req.GetKernelModules() {
		mods = append(mods, sandbox.KernelModule{Name: m.GetName(), Parameters: m.GetParameters()})
	}
	return empty(sb.CreateSandbox(ctx, sandbox.Config{
		ID: req.GetSandboxId(), Hostname: req.GetHostname(), DNS: req.GetDns(),
		KernelModules: mods, Storages: storages, GuestHookPath: req.GetGuestHookPath(),
	}))
}

// DestroySandbox implements grpc.AgentService.
func (a *Agent) DestroySandbox(ctx context.Context, _ *agentpb.DestroySandboxRequest) (*emptypb.Empty, error) {
	sb, err := a.pod("DestroySandbox")
	if err != nil {
		return nil, err
	}
	if err := sb.DestroySandbox(ctx); err != nil {
		return nil, toStatus(err)
	}
	if a.afterDestroy != nil {
		// Let the reply reach the shim before the agent goes.
		time.AfterFunc(afterDestroyDelay, a.afterDestroy)
	}
	return &emptypb.Empty{}, nil
}

// afterDestroyDelay is how long the reply to DestroySandbox gets to reach
// the shim before AfterDestroy runs.
const afterDestroyDelay = 100 * time.Millisecond

// GetOOMEvent implements grpc.AgentService (a long poll).
func (a *Agent) GetOOMEvent(ctx context.Context, _ *agentpb.GetOOMEventRequest) (*agentpb.OOMEvent, error) {
	sb, err := a.pod("GetOOMEvent")
	if err != nil {
		return nil, err
	}
	id, err := sb.GetOOMEvent(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentpb.OOMEvent{ContainerId: id}, nil
}
