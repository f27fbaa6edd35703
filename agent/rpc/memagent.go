package rpc

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/wren-vm/wren/agent/memagent"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// MemAgentMemcgSet retunes the mem-agent's reclaim of cold memory from
// the containers' cgroups; fields the request leaves unset keep their
// values, as with Kata's agent.
func (a *Agent) MemAgentMemcgSet(ctx context.Context, req *agentpb.MemAgentMemcgConfig) (*emptypb.Empty, error) {
	mem, err := a.memAgent()
	if err != nil {
		return nil, err
	}
	err = mem.SetMemcg(ctx, memagent.MemcgUpdate{
		Disabled:                 req.Disabled,
		Swap:                     req.Swap,
		SwappinessMax:            req.SwappinessMax,
		PeriodSecs:               req.PeriodSecs,
		PeriodPSIPercentLimit:    req.PeriodPsiPercentLimit,
		EvictionPSIPercentLimit:  req.EvictionPsiPercentLimit,
		EvictionRunAgingCountMin: req.EvictionRunAgingCountMin,
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &emptypb.Empty{}, nil
}

// MemAgentCompactSet retunes the mem-agent's periodic memory compaction;
// fields the request leaves unset keep their values, as with Kata's
// agent.
func (a *Agent) MemAgentCompactSet(ctx context.Context, req *agentpb.MemAgentCompactConfig) (*emptypb.Empty, error) {
	mem, err := a.memAgent()
	if err != nil {
		return nil, err
	}
	err = mem.SetCompact(ctx, memagent.CompactUpdate{
		Disabled:               req.Disabled,
		PeriodSecs:             req.PeriodSecs,
		PeriodPSIPercentLimit:  req.PeriodPsiPercentLimit,
		CompactPSIPercentLimit: req.CompactPsiPercentLimit,
		CompactSecMax:          req.CompactSecMax,
		CompactOrder:           req.CompactOrder,
		CompactThreshold:       req.CompactThreshold,
		CompactForceTimes:      req.CompactForceTimes,
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &emptypb.Empty{}, nil
}

// memAgent is the running mem-agent, or FailedPrecondition when there is
// none: the guest was not booted with agent.mem_agent_enable, or it
// could not start (agent/assemble logs why). Kata's agent answers
// Internal ("mem-agent is disabled"); the request is sound and the agent
// healthy, it is the guest's configuration that does not allow it.
func (a *Agent) memAgent() (*memagent.Agent, error) {
	if a.guest.MemAgent == nil {
		return nil, status.Error(codes.FailedPrecondition, "no mem-agent runs in this guest (agent.mem_agent_enable is off, or the agent's log says why it did not start)")
	}
	return a.guest.MemAgent, nil
}
