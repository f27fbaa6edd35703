// Package rpc implements the agent's ttrpc services, grpc.AgentService and
// grpc.Health, on top of the packages that do the work (sandbox,
// containers, storage, devices, network). It is the agent's protocol edge:
// the one place, with agent/ocispec and agent/server, that knows protobuf
// and status codes. Each handler converts its request into the domain
// packages' types and their errors into statuses (errors.go, one table).
// Handlers are split by area into files; with an agent policy (Options.Policy)
// every request but a few Kata also leaves alone is checked against it
// before its handler runs (policy.go).
package rpc

import (
	"log/slog"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	"github.com/wren-vm/wren/agent/config"
	"github.com/wren-vm/wren/agent/hotplug"
	"github.com/wren-vm/wren/agent/sandbox"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// Agent serves grpc.AgentService.
type Agent struct {
	log   *slog.Logger
	cfg   config.Config
	guest *GuestServices
	// sandbox serves the sandbox, container, process and IO RPCs; without
	// one they answer Unimplemented.
	sandbox *sandbox.Sandbox
	// online runs OnlineCPUMem requests that do not wait, one at a time.
	online *hotplug.Background
	// setClock sets the system clock (unix.Settimeofday); tests replace it
	// so that no test can set the machine's clock.
	setClock func(*unix.Timeval) error
	// afterDestroy runs once a DestroySandbox has been answered.
	afterDestroy func()
	// policy checks each request and serves SetPolicy; nil: no policy.
	policy Gate
}

var _ agentpb.AgentServiceService = (*Agent)(nil)

// Options carries what the handlers need from the rest of the agent.
type Options struct {
	Log    *slog.Logger
	Config config.Config
	// Guest holds the storage, device, network and guest-side services
	// (agent/assemble builds them); nil leaves their RPCs FailedPrecondition.
	Guest *GuestServices
	// Sandbox is the pod model (package sandbox) behind the sandbox,
	// container, process and IO RPCs.
	Sandbox *sandbox.Sandbox
	// AfterDestroy, when set, runs shortly after a successful
	// DestroySandbox was answered: as PID 1 the agent then ends and the VM
	// powers off, as a Kata shim expects of a sandbox VM it tears down.
	AfterDestroy func()
	// Policy, when set, checks every request before its handler (Register)
	// and serves SetPolicy; nil leaves requests unchecked and SetPolicy
	// Unimplemented, as in the default build.
	Policy Gate
}

// New makes the AgentService implementation.
func New(opts Options) *Agent {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	guest := opts.Guest
	if guest == nil {
		guest = &GuestServices{}
	}
	a := &Agent{log: log, cfg: opts.Config, guest: guest, sandbox: opts.Sandbox, setClock: unix.Settimeofday, afterDestroy: opts.AfterDestroy, policy: opts.Policy}
	a.online = hotplug.NewBackground(log, onlineTimeout, a.onlineCPUMem)
	return a
}

// Register registers grpc.AgentService, with ReadStdout and ReadStderr
// sending large output straight from its pipe (SpliceReads) and, with a
// policy, every method gated by it (gateMethods), and grpc.Health on srv.
func Register(srv Registrar, a *Agent) {
	desc := agentpb.AgentServiceServiceDesc(a)
	a.SpliceReads(desc)
	if a.policy != nil {
		gateMethods(desc, a.policy)
	}
	srv.RegisterService(agentpb.AgentServiceServiceName, desc)
	srv.RegisterService(agentpb.HealthServiceName, agentpb.HealthServiceDesc(Health{}))
}

// Registrar is what services register on: agent/server's Server, or
// ttrpc's own.
type Registrar interface {
	RegisterService(name string, desc *ttrpc.ServiceDesc)
}
