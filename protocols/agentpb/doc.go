// Package agentpb holds the Go bindings of the Kata Containers agent API
// (proto package "grpc": services grpc.AgentService and grpc.Health, the OCI
// spec messages and the CSI volume statistics), generated from
// protocols/protos by `make proto`. The ttrpc server side is
// RegisterAgentServiceService / RegisterHealthService; the client side is
// NewAgentServiceClient / NewHealthClient.
package agentpb
