package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/wren-vm/wren/agent/address"
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

// ErrHelp is returned when the flags asked for usage.
var ErrHelp = flag.ErrHelp

// Load builds the configuration from all sources in precedence order.
func Load(in Input) (Loaded, error) {
	if in.Getenv == nil {
		in.Getenv = os.Getenv
	}
	if in.ReadFile == nil {
		in.ReadFile = os.ReadFile
	}
	if in.CmdlinePath == "" {
		in.CmdlinePath = "/proc/cmdline"
	}

	var out Loaded
	fs := flag.NewFlagSet("wren-agent", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	serverAddr := fs.String("server-addr", "", "ttrpc listen address (vsock://CID:PORT, unix:///path, unix://@name)")
	logLevel := fs.String("log-level", "", "log level: trace, debug, info, warn, error")
	configFile := fs.String("config", "", "TOML configuration file")
	stateRoot := fs.String("state-root", "", "directory for sandbox state (default "+DefaultStateRoot+")")
	cgroupParent := fs.String("cgroup-parent", "", "cgroup that holds every container's cgroup (default "+DefaultCgroupParent+")")
	pidsMax := fs.String("sandbox-pids-max", "", fmt.Sprintf("pids.max of the cgroup parent: 0 derives it from the guest's limits, else at least %d (default 0)", MinSandboxPidsMax))
	readCmdline := fs.Bool("kernel-cmdline", false, "read agent.* keys from the kernel command line (always on as PID 1)")
	fs.BoolVar(&out.ShowVersion, "version", false, "print the version and exit")
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
	fileName := ""
	if in.PID1 || *readCmdline {
		data, err := in.ReadFile(in.CmdlinePath)
		if err != nil {
			return out, fmt.Errorf("read kernel command line: %w", err)
		}
		res, err := applyCmdline(&c, string(data))
		if err != nil {
			return out, err
		}
		out.IgnoredCmdline = res.ignored
		fileName = res.configFile
	}
	if *configFile != "" {
		fileName = *configFile
	}
	if fileName != "" {
		data, err := in.ReadFile(fileName)
		if err != nil {
			return out, fmt.Errorf("config file: %w", err)
		}
		if err := applyFile(&c, fileName, data); err != nil {
			return out, err
		}
		c.ConfigFile = fileName
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

	if *serverAddr != "" {
		c.ServerAddr = *serverAddr
	}
	if *logLevel != "" {
		lvl, err := ParseLevel(*logLevel)
		if err != nil {
			return out, invalidValue("flags", "--log-level", *logLevel, err)
		}
		c.LogLevel = lvl
	}
	if *stateRoot != "" {
		c.StateRoot = *stateRoot
	}
	if *cgroupParent != "" {
		c.CgroupParent = *cgroupParent
	}
	if *pidsMax != "" {
		n, err := parsePidsMax(*pidsMax)
		if err != nil {
			return out, invalidValue("flags", "--sandbox-pids-max", *pidsMax, err)
		}
		c.SandboxPidsMax = n
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

// Usage writes the flag summary.
func Usage(w io.Writer) {
	fmt.Fprintln(w, "usage: wren-agent [--server-addr ADDR] [--log-level LEVEL] [--config FILE] [--state-root DIR] [--cgroup-parent PATH] [--sandbox-pids-max N] [--kernel-cmdline] [--version]")
}
