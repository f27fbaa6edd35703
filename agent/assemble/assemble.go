// Package assemble builds the agent's object graph from its configuration:
// the storage, device, network and guest services, the sandbox that runs
// the containers, and the API handlers on top of them. It is the one place
// where the parts are wired together, each built with everything it needs,
// so nothing is patched in after construction. The agent's main uses it,
// and so do tests that need the agent as the agent builds itself.
package assemble

import (
	"context"
	"log/slog"
	"net"

	"github.com/vishvananda/netlink"

	"github.com/wren-vm/wren/agent/config"
	"github.com/wren-vm/wren/agent/copyfile"
	"github.com/wren-vm/wren/agent/device"
	"github.com/wren-vm/wren/agent/hotplug"
	"github.com/wren-vm/wren/agent/memagent"
	"github.com/wren-vm/wren/agent/metrics"
	"github.com/wren-vm/wren/agent/network"
	"github.com/wren-vm/wren/agent/passfd"
	"github.com/wren-vm/wren/agent/reaper"
	"github.com/wren-vm/wren/agent/rpc"
	"github.com/wren-vm/wren/agent/sandbox"
	"github.com/wren-vm/wren/agent/storage"
	"github.com/wren-vm/wren/agent/uevent"
)

// Options are what the graph is built from.
type Options struct {
	Log    *slog.Logger
	Config config.Config
	// Reaper is the process's one child reaper.
	Reaper *reaper.Reaper
	// Watcher is the uevent listener; nil makes hot-plugged devices
	// unavailable.
	Watcher *uevent.Watcher
	// Netlink is the rtnetlink handle; nil means the agent's own network
	// namespace.
	Netlink *netlink.Handle
	// SysfsRoot is where CPU and memory hotplug find sysfs; "" is /sys.
	SysfsRoot string
	// NamespaceDir overrides where the sandbox keeps its namespaces (see
	// sandbox.Options).
	NamespaceDir string
	// AfterDestroy runs after a DestroySandbox was answered (see
	// rpc.Options).
	AfterDestroy func()
	// Context bounds the agent's background work: the mem-agent, when
	// Config turns it on, runs until it ends. nil is the life of the
	// process.
	Context context.Context
	// PassfdListener, when set, is where the host connects the streams of
	// passfd IO (main makes it on agent.passfd_listener_port); it is
	// served until Context ends.
	PassfdListener net.Listener
}

// Agent is the assembled agent.
type Agent struct {
	Guest   *rpc.GuestServices
	Sandbox *sandbox.Sandbox
	// API serves grpc.AgentService (rpc.Register registers it).
	API *rpc.Agent
}

// New builds the agent's parts in dependency order: devices, then what
// uses them (network, storage), the sandbox on storage and devices, the
// guest services with the sandbox's hooks (and the mem-agent, when the
// configuration turns it on), and the handlers on all.
func New(o Options) (*Agent, error) {
	cfg := o.Config
	stateRoot := cfg.StateRoot
	if stateRoot == "" {
		stateRoot = storage.DefaultStateRoot
	}
	var waiter device.Waiter
	if o.Watcher != nil {
		waiter = o.Watcher
	}
	devs := device.New(waiter, device.Options{})
	netw, err := network.New(o.Netlink, devs)
	if err != nil {
		return nil, err
	}
	store := storage.New(storage.Options{StateRoot: stateRoot, Devices: devs, Log: o.Log})
	var streams *passfd.Streams
	if o.PassfdListener != nil {
		ctx := o.Context
		if ctx == nil {
			ctx = context.Background()
		}
		streams = passfd.Serve(ctx, o.PassfdListener, o.Log)
	}
	sb, err := sandbox.New(sandbox.Options{
		StateRoot:    cfg.StateRoot,
		NamespaceDir: o.NamespaceDir,
		CgroupParent: cfg.CgroupParent,
		PidsMax:      cfg.SandboxPidsMax,
		PipeSize:     cfg.ContainerPipeSize,
		Reaper:       o.Reaper,
		Storage:      store,
		Devices:      devs,
		Passfd:       streams,
		Log:          o.Log,
	})
	if err != nil {
		return nil, err
	}
	var mem *memagent.Agent
	if cfg.MemAgentEnable {
		mem = startMemAgent(o)
	}
	guest := &rpc.GuestServices{
		Storage:        store,
		Devices:        devs,
		Network:        netw,
		CopyFile:       copyfile.New(storage.SharedDir(stateRoot)),
		Hotplug:        hotplug.New(o.SysfsRoot),
		Metrics:        metrics.New(""),
		MemAgent:       mem,
		TerminationLog: sb.TerminationLog,
		CPUsOnlined:    sb.ReapplyCPUSets,
	}
	ctx := o.Context
	if ctx == nil {
		ctx = context.Background()
	}
	api := rpc.New(rpc.Options{
		Log: o.Log, Config: cfg, Guest: guest, Sandbox: sb, AfterDestroy: o.AfterDestroy,
		Policy: newPolicy(ctx, o.Log, cfg),
	})
	return &Agent{Guest: guest, Sandbox: sb, API: api}, nil
}

// startMemAgent builds the mem-agent and runs it until o.Context ends. A
// guest that cannot run it (no PSI) gets nil and the reason in the log,
// and the agent serves on without it: as PID 1 it must not stop the pod
// for a memory-saving helper. Built after every step of New that can
// fail, so that no failed New leaves its loop running.
func startMemAgent(o Options) *memagent.Agent {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	mem, err := memagent.New(memagent.Options{Log: log, Memcg: o.Config.MemAgentMemcg, Compact: o.Config.MemAgentCompact})
	if err != nil {
		log.Error("mem-agent not started", "err", err)
		return nil
	}
	ctx := o.Context
	if ctx == nil {
		ctx = context.Background()
	}
	go mem.Run(ctx)
	return mem
}
