package rpc

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// unimplemented is the answer to a method this agent, as built, does not
// do: SetPolicy without the policy engine. Every method has a handler on
// *Agent (TestEveryMethodHandled).
func unimplemented(method string) error {
	return status.Errorf(codes.Unimplemented, "/grpc.AgentService/%s is not implemented by this agent", method)
}
