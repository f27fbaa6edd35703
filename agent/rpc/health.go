package rpc

import (
	"context"

	"github.com/wren-vm/wren/agent/version"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// Health serves grpc.Health: the host's "is the agent up" probe.
type Health struct{}

var _ agentpb.HealthService = Health{}

// Check reports SERVING: answering at all is the signal the host waits for.
func (Health) Check(context.Context, *agentpb.CheckRequest) (*agentpb.HealthCheckResponse, error) {
	return &agentpb.HealthCheckResponse{Status: agentpb.HealthCheckResponse_SERVING}, nil
}

// Version reports the agent build and the API version it speaks.
func (Health) Version(context.Context, *agentpb.CheckRequest) (*agentpb.VersionCheckResponse, error) {
	return &agentpb.VersionCheckResponse{AgentVersion: version.Version, GrpcVersion: version.APIVersion}, nil
}
