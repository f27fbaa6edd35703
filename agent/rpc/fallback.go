package rpc

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/wren-vm/wren/protocols/agentpb"
)

// fallback holds the AgentService methods this agent answers with
// Unimplemented on purpose: every other method has a handler on *Agent.
// Agent embeds it (see unimplementedMethods); a handler that implements
// one of these later must take its stub away, which
// TestEveryMethodHandledOrUnimplementedOnPurpose checks.
type fallback struct{}

func unimplemented(method string) error {
	return status.Errorf(codes.Unimplemented, "/grpc.AgentService/%s is not implemented by this agent", method)
}

// SetPolicy loads a Kata agent policy; this agent has no policy engine to
// load it into.
func (fallback) SetPolicy(context.Context, *agentpb.SetPolicyRequest) (*emptypb.Empty, error) {
	return nil, unimplemented("SetPolicy")
}
