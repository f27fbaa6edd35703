package rpc

import (
	"context"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/wren-vm/wren/protocols/agentpb"
)

// Gate is the agent policy (agent/policy's Policy): every request passes
// Check before its handler runs, and SetPolicy replaces the policy.
type Gate interface {
	Check(ctx context.Context, req proto.Message) error
	Set(ctx context.Context, req *agentpb.SetPolicyRequest) error
}

// uncheckedMethods are the AgentService methods the policy does not gate,
// those Kata's agent (src/agent/src/rpc.rs) does not pass to is_allowed:
// the mem-agent settings, and SetPolicy, which Gate.Set checks itself
// together with the replacement. grpc.Health (Check, Version) is not gated
// either, in Kata as here: it tells the host the agent is up.
var uncheckedMethods = map[string]bool{
	"MemAgentMemcgSet":   true,
	"MemAgentCompactSet": true,
	"SetPolicy":          true,
}

// gateMethods puts the policy check in front of every method of desc but
// the unchecked ones. The check runs once the request is decoded, inside
// the unmarshal step every generated method (and SpliceReads' ReadStdout
// and ReadStderr) begins with, so no method can reach its handler without
// it; a refused request never reaches its handler.
func gateMethods(desc *ttrpc.ServiceDesc, g Gate) {
	for name, fn := range desc.Methods {
		if uncheckedMethods[name] {
			continue
		}
		desc.Methods[name] = gated(name, fn, g)
	}
}

func gated(name string, fn ttrpc.Method, g Gate) ttrpc.Method {
	return func(ctx context.Context, unmarshal func(any) error) (any, error) {
		return fn(ctx, func(v any) error {
			if err := unmarshal(v); err != nil {
				return err
			}
			req, ok := v.(proto.Message)
			if !ok {
				return status.Errorf(codes.Internal, "%s: request %T is no protobuf message", name, v)
			}
			return toStatus(g.Check(ctx, req))
		})
	}
}

// SetPolicy implements grpc.AgentService: it replaces the agent policy
// when the current one allows SetPolicyRequest. Without a policy engine
// (the default build) it is Unimplemented.
func (a *Agent) SetPolicy(ctx context.Context, req *agentpb.SetPolicyRequest) (*emptypb.Empty, error) {
	if a.policy == nil {
		return nil, unimplemented("SetPolicy")
	}
	return empty(a.policy.Set(ctx, req))
}
