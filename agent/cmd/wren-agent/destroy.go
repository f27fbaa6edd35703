package main

import (
	"context"
	"errors"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/wren-vm/wren/agent/rpc"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// errSandboxDestroyed is the power-off reason after DestroySandbox.
var errSandboxDestroyed = errors.New("sandbox destroyed")

// podAgent ends the agent (and, as PID 1, powers the VM off) after a
// successful DestroySandbox: a Kata shim expects the sandbox VM to go away.
type podAgent struct {
	*rpc.Agent
	destroyed context.CancelCauseFunc
}

func (a podAgent) DestroySandbox(ctx context.Context, req *agentpb.DestroySandboxRequest) (*emptypb.Empty, error) {
	resp, err := a.Agent.DestroySandbox(ctx, req)
	if err == nil {
		// Let the reply reach the shim before the server stops.
		time.AfterFunc(100*time.Millisecond, func() { a.destroyed(errSandboxDestroyed) })
	}
	return resp, err
}

// register registers the agent's services; with destroyed set (PID 1),
// DestroySandbox also ends the agent.
func register(srv *ttrpc.Server, agent *rpc.Agent, destroyed context.CancelCauseFunc) {
	if destroyed == nil {
		rpc.Register(srv, agent)
		return
	}
	agentpb.RegisterAgentServiceService(srv, podAgent{Agent: agent, destroyed: destroyed})
	agentpb.RegisterHealthService(srv, rpc.Health{})
}
