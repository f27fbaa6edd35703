package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/wren-vm/wren/agent/address"
	"github.com/wren-vm/wren/agent/memagent"
)

// Input is everything Load reads from. Zero fields take the process's own.
type Input struct {
	// Args are the agent's arguments, without the program name.
	Args []string
	// Getenv looks up environment variables.
	Getenv func(string) string
	// ReadFile reads the kernel command line and the config file.
	ReadFile func(string) ([]byte, error)
	// PID1 makes the kernel command line a source without --kernel-cmdline.
	PID1 bool
	// CmdlinePath is the kernel command line file, /proc/cmdline by default.
	CmdlinePath string
}

// Loaded is the outcome of Load.
type Loaded struct {
	Config Config
	// ShowVersion is set by --version: print it and exit.
	ShowVersion bool
	// IgnoredCmdline lists unknown agent.* words of the kernel command line.
	IgnoredCmdline []string
}

// flagValues are the flags' values; empty means not given.
type flagValues struct {
	serverAddr, logLevel, configFile, stateRoot, cgroupParent, pidsMax, policyFile string
	readCmdline                                                                    bool
	memAgent                                                                       *bool
}

// newFlagSet defines the agent's flags; Usage lists the same set.
func newFlagSet(out *Loaded) (*flag.FlagSet, *flagValues) {
	f := &flagValues{}
	fs := flag.NewFlagSet("wren-agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&f.serverAddr, "server-addr", "", "ttrpc listen `ADDR`: vsock://CID:PORT (CID -1 for any), unix:///path, unix://@name (default "+DefaultServerAddr+")")
	fs.StringVar(&f.logLevel, "log-level", "", "log `LEVEL`: trace, debug, info, warn, error (default info)")
	fs.StringVar(&f.configFile, "config", "", "TOML configuration `FILE` (its keys are the file: names below)")
	fs.StringVar(&f.stateRoot, "state-root", "", "`DIR` for sandbox state: bundles, shared mounts, namespaces (default "+DefaultStateRoot+")")
	fs.StringVar(&f.cgroupParent, "cgroup-parent", "", "cgroup (a relative `PATH`) that holds every container's cgroup (default "+DefaultCgroupParent+")")
	fs.StringVar(&f.pidsMax, "sandbox-pids-max", "", fmt.Sprintf("pids.max (`N`) of the cgroup parent: 0 derives it from the guest's limits, else at least %d (default 0)", MinSandboxPidsMax))
	fs.BoolFunc("mem-agent-enable", "run the mem-agent, which hands memory the containers leave unused back to the host (default off; its tuning keys are below)", func(s string) error {
		b, err := strconv.ParseBool(s)
		f.memAgent = &b
		return err
	})
	fs.StringVar(&f.policyFile, "policy-file", "", "agent policy (Rego) `FILE` in force from start-up; only the policy build reads it (default "+DefaultPolicyFile+")")
	fs.BoolVar(&f.readCmdline, "kernel-cmdline", false, "read agent.* keys from the kernel command line (always on as PID 1)")
	fs.BoolVar(&out.ShowVersion, "version", false, "print the version and exit")
	return fs, f
}

// policyFile is the policy file the environment, then the flag, set over
// cur (from the defaults, command line and file).
func policyFile(cur string, in Input, f *flagValues) string {
	if f.policyFile != "" {
		return f.policyFile
	}
	if v := in.Getenv("WREN_AGENT_POLICY_FILE"); v != "" {
		return v
	}
	return cur
}

// ErrHelp is returned when the flags asked for usage.
var ErrHelp = flag.ErrHelp

// Load builds the configuration from all sources in precedence order.
func Load(in Input) (Loaded, error) {
	in.fill()
	var out Loaded
	fs, f := newFlagSet(&out)
	if err := fs.Parse(in.Args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return out, ErrHelp
		}
		return out, fmt.Errorf("flags: %w", err)
	}
	if fs.NArg() > 0 {
		return out, fmt.Errorf("flags: unexpected argument %q", fs.Arg(0))
	}

	c := Default()
	if err := applyCmdlineAndFile(&c, &out, in, f); err != nil {
		return out, err
	}

	if v := in.Getenv("WREN_AGENT_SERVER_ADDR"); v != "" {
		c.ServerAddr = v
	}
	if v := in.Getenv("WREN_AGENT_LOG_LEVEL"); v != "" {
		lvl, err := ParseLevel(v)
		if err != nil {
			return out, invalidValue("environment", "WREN_AGENT_LOG_LEVEL", v, err)
		}
		c.LogLevel = lvl
	}

	if f.serverAddr != "" {
		c.ServerAddr = f.serverAddr
	}
	c.PolicyFile = policyFile(c.PolicyFile, in, f)
	if f.logLevel != "" {
		lvl, err := ParseLevel(f.logLevel)
		if err != nil {
			return out, invalidValue("flags", "--log-level", f.logLevel, err)
		}
		c.LogLevel = lvl
	}
	if f.stateRoot != "" {
		c.StateRoot = f.stateRoot
	}
	if f.cgroupParent != "" {
		c.CgroupParent = f.cgroupParent
	}
	if f.pidsMax != "" {
		n, err := parsePidsMax(f.pidsMax)
		if err != nil {
			return out, invalidValue("flags", "--sandbox-pids-max", f.pidsMax, err)
		}
		c.SandboxPidsMax = n
	}
	if f.memAgent != nil {
		c.MemAgentEnable = *f.memAgent
	}
	if err := checkMemAgent(c); err != nil {
		return out, err
	}
	if err := checkCgroupParent(c.CgroupParent); err != nil {
		return out, invalidValue("configuration", "cgroup parent", c.CgroupParent, err)
	}
	if err := checkServerAddr(c.ServerAddr); err != nil {
		return out, fmt.Errorf("server address %q: %w", c.ServerAddr, err)
	}
	out.Config = c
	return out, nil
}

// checkMemAgent refuses mem-agent tuning the mem-agent would refuse, so
// that a bad key stops the agent where it is read rather than leaving it
// without a mem-agent. Kata reads the tuning keys only when the
// mem-agent is on; they are checked here either way, as every known key
// is.
func checkMemAgent(c Config) error {
	if _, err := memagent.DefaultMemcg().With(c.MemAgentMemcg); err != nil {
		return fmt.Errorf("configuration: agent.mem_agent_memcg_*: %w", err)
	}
	if _, err := memagent.DefaultCompact().With(c.MemAgentCompact); err != nil {
		return fmt.Errorf("configuration: agent.mem_agent_compact_*: %w", err)
	}
	return nil
}

// fill gives the zero fields of in the process's own.
func (in *Input) fill() {
	if in.Getenv == nil {
		in.Getenv = os.Getenv
	}
	if in.ReadFile == nil {
		in.ReadFile = os.ReadFile
	}
	if in.CmdlinePath == "" {
		in.CmdlinePath = "/proc/cmdline"
	}
}

// applyCmdlineAndFile applies the kernel command line (as PID 1 or with
// --kernel-cmdline), then the config file it or --config names; it records
// the command line's ignored words in out.
func applyCmdlineAndFile(c *Config, out *Loaded, in Input, f *flagValues) error {
	fileName := ""
	if in.PID1 || f.readCmdline {
		data, err := in.ReadFile(in.CmdlinePath)
		if err != nil {
			return fmt.Errorf("read kernel command line: %w", err)
		}
		res, err := applyCmdline(c, string(data))
		if err != nil {
			return err
		}
		out.IgnoredCmdline = res.ignored
		fileName = res.configFile
	}
	if f.configFile != "" {
		fileName = f.configFile
	}
	if fileName != "" {
		data, err := in.ReadFile(fileName)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		if err := applyFile(c, fileName, data); err != nil {
			return err
		}
		c.ConfigFile = fileName
	}
	return nil
}

// checkServerAddr accepts the address forms the agent can listen on.
func checkServerAddr(s string) error {
	a, err := address.Parse(s)
	if err != nil {
		return err
	}
	if a.Scheme == address.HybridVsock {
		return fmt.Errorf("hybrid vsock is a host-side dial form; the agent listens on vsock:// or unix://")
	}
	return nil
}

// checkCgroupParent accepts a relative cgroup path that stays below the
// hierarchy's root.
func checkCgroupParent(p string) error {
	if p == "" || strings.HasPrefix(p, "/") {
		return fmt.Errorf("want a relative cgroup path")
	}
	for _, part := range strings.Split(p, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("bad path element %q", part)
		}
	}
	return nil
}
