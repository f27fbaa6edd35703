package main

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/wren-vm/wren/agent/rpc"
	"github.com/wren-vm/wren/agent/server"
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

// register registers the agent's services on srv, with ReadStdout and
// ReadStderr sending large output from its pipe (rpc.Agent.SpliceReads);
// with destroyed set (PID 1), DestroySandbox also ends the agent.
func register(srv *server.Server, agent *rpc.Agent, destroyed context.CancelCauseFunc) {
	var svc agentpb.AgentServiceService = agent
	if destroyed != nil {
		svc = podAgent{Agent: agent, destroyed: destroyed}
	}
	desc := agentpb.AgentServiceServiceDesc(svc)
	agent.SpliceReads(desc)
	srv.RegisterService(agentpb.AgentServiceServiceName, desc)
	srv.RegisterService(agentpb.HealthServiceName, agentpb.HealthServiceDesc(rpc.Health{}))
}
