// Package assemble builds the agent's object graph from its configuration:
// the storage, device, network and guest services, the sandbox that runs
// the containers, and the API handlers on top of them. It is the one place
// where the parts are wired together, each built with everything it needs,
// so nothing is patched in after construction. The agent's main uses it,
// and so do tests that need the agent as the agent builds itself.
package assemble

import (
	"log/slog"

	"github.com/vishvananda/netlink"

	"github.com/wren-vm/wren/agent/config"
	"github.com/wren-vm/wren/agent/copyfile"
	"github.com/wren-vm/wren/agent/device"
	"github.com/wren-vm/wren/agent/hotplug"
	"github.com/wren-vm/wren/agent/metrics"
	"github.com/wren-vm/wren/agent/network"
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
// guest services with the sandbox's hooks, and the handlers on all.
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
	sb, err := sandbox.New(sandbox.Options{
		StateRoot:    cfg.StateRoot,
		NamespaceDir: o.NamespaceDir,
		CgroupParent: cfg.CgroupParent,
		PidsMax:      cfg.SandboxPidsMax,
		PipeSize:     cfg.ContainerPipeSize,
		Reaper:       o.Reaper,
		Storage:      store,
		Devices:      devs,
		Log:          o.Log,
	})
	if err != nil {
		return nil, err
	}
	guest := &rpc.GuestServices{
		Storage:        store,
		Devices:        devs,
		Network:        netw,
		CopyFile:       copyfile.New(storage.SharedDir(stateRoot)),
		Hotplug:        hotplug.New(o.SysfsRoot),
		Metrics:        metrics.New(""),
		TerminationLog: sb.TerminationLog,
		CPUsOnlined:    sb.ReapplyCPUSets,
	}
	api := rpc.New(rpc.Options{Log: o.Log, Config: cfg, Guest: guest, Sandbox: sb, AfterDestroy: o.AfterDestroy})
	return &Agent{Guest: guest, Sandbox: sb, API: api}, nil
}
