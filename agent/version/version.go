// Package version holds the agent's build version and the API version it
// speaks, as reported by Health.Version.
package version

// Version is the agent's build version, set at link time by the Makefile.
var Version = "dev"

// APIVersion is the Kata agent API version this schema matches; Kata's agent
// reports the same value in VersionCheckResponse.grpc_version.
const APIVersion = "0.0.1"
