// Package config assembles the agent's configuration from its sources.
//
// Sources, lowest to highest precedence: built-in defaults, the kernel
// command line (Kata's agent.* keys), a TOML file, the environment and the
// agent's own flags. The kernel command line is read only when the agent is
// PID 1 or is told to, so an agent started on a host is not steered by the
// host's boot parameters.
package config

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/wren-vm/wren/agent/memagent"
)

// Default values; the ports match Kata's host-side defaults.
const (
	// DefaultPolicyFile is where Kata's guest images keep the default
	// agent policy, and where the rootfs builder puts one.
	DefaultPolicyFile     = "/etc/kata-opa/default-policy.rego"
	DefaultServerAddr     = "vsock://-1:1024"
	DefaultStateRoot      = "/run/kata-containers"
	DefaultHotplugTimeout = 3 * time.Second
	DefaultCgroupParent   = "wren"
	// DefaultContainerPipeSize differs from Kata's (0, the kernel's
	// 64 KiB): a ReadStdout returns at most what the pipe holds, and the
	// per-call cost (a ttrpc round trip, about ten context switches in
	// the agent on a guest) dominates, so with 64 KiB pipes the agent
	// spent about 30% more CPU per MiB of output than with 256 KiB ones.
	// 1 MiB pipes saved about 25% more agent CPU but no throughput (the
	// reading client costs as much per MiB), for four times the kernel
	// memory per pipe: its slot array alone is 16 KiB of slab, against 4
	// for 256 KiB and 1 for 64 KiB (docs/perf/stdout.md). Pipe pages are
	// allocated only as output waits in them. agent.container_pipe_size=0
	// restores the kernel default.
	DefaultContainerPipeSize = 256 << 10
	// MinSandboxPidsMax is the least SandboxPidsMax that may be set.
	// Starting a container or an exec briefly takes a dozen or so tasks
	// in the pod (libcontainer's init stages and its Go runtime's
	// threads), and the sandbox keeps part of its ceiling free for them:
	// a smaller ceiling would be a pod that cannot start its containers.
	MinSandboxPidsMax = 64
)

// Config is the agent's effective configuration.
type Config struct {
	// ServerAddr is where the ttrpc server listens: vsock://CID:PORT
	// (CID -1 for any), unix:///path or unix://@abstract.
	ServerAddr string
	// LogLevel is the minimum level of the JSON log on stderr.
	LogLevel slog.Level
	// LogVport, when non-zero, is the vsock port that streams the log to
	// the first host connection.
	LogVport uint32
	// DebugConsole starts a shell for the host: on vsock DebugConsoleVport,
	// or on /dev/console when the port is 0.
	DebugConsole      bool
	DebugConsoleVport uint32
	// PassfdListenerPort, when not 0, is the vsock port on which the host
	// connects the streams of Kata's passfd IO (agent/passfd).
	PassfdListenerPort uint32
	// HotplugTimeout bounds every wait for a device uevent.
	HotplugTimeout time.Duration
	// ContainerPipeSize is applied to container stdio pipes with
	// F_SETPIPE_SZ (DefaultContainerPipeSize unless configured); 0 keeps
	// the kernel default.
	ContainerPipeSize int
	// DevMode lets the agent dump core and relaxes nothing else.
	DevMode bool
	// UnifiedCgroupHierarchy selects cgroup v2 in the guest.
	UnifiedCgroupHierarchy bool
	// StateRoot holds the sandbox's bundles, shared mounts and namespaces.
	StateRoot string
	// CgroupParent is the cgroup that holds every container's: one whose
	// spec names no cgroupsPath is placed as /<CgroupParent>/<container
	// id>, one whose spec names a path outside it as
	// /<CgroupParent>/<path>.
	CgroupParent string
	// SandboxPidsMax is the pids.max of the cgroup parent, the ceiling on
	// the tasks of all the sandbox's containers together. 0 (the default)
	// derives it at CreateSandbox from the guest's own limits
	// (kernel.pid_max, kernel.threads-max), less a reserve for the agent.
	SandboxPidsMax int64
	// MemAgentEnable runs the mem-agent (package memagent), which hands
	// memory the containers leave unused back to the host; off by
	// default, as Kata's agent.mem_agent_enable.
	MemAgentEnable bool
	// MemAgentMemcg and MemAgentCompact are its starting tuning (Kata's
	// agent.mem_agent_memcg_* and agent.mem_agent_compact_* keys); what
	// they leave unset keeps Kata's defaults.
	MemAgentMemcg   memagent.MemcgUpdate
	MemAgentCompact memagent.CompactUpdate
	// ConfigFile is the TOML file the configuration was read from, if any.
	ConfigFile string
	// PolicyFile is the agent policy in force from start-up (Kata's
	// policy_file); only an agent built with the policy engine reads it.
	PolicyFile string
}

// Default returns the configuration used when no source sets a value.
func Default() Config {
	return Config{
		ServerAddr:     DefaultServerAddr,
		LogLevel:       slog.LevelInfo,
		HotplugTimeout: DefaultHotplugTimeout,
		StateRoot:      DefaultStateRoot,
		CgroupParent:   DefaultCgroupParent,
		PolicyFile:     DefaultPolicyFile,

		ContainerPipeSize: DefaultContainerPipeSize,
	}
}

// LevelTrace is below Debug: Kata's "trace" level.
const LevelTrace = slog.LevelDebug - 4

// ParseLevel accepts Kata's logrus level names as well as slog's.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "trace":
		return LevelTrace, nil
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	case "critical", "fatal", "panic":
		return slog.LevelError + 4, nil
	}
	return 0, fmt.Errorf("unknown log level %q (want trace, debug, info, warn, error or critical)", s)
}

// invalidValue is the error for a known key with a value it cannot take.
func invalidValue(source, key, value string, err error) error {
	return fmt.Errorf("%s: invalid value %q for %s: %w", source, value, key, err)
}
