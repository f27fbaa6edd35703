package config

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// fileConfig mirrors the TOML file. Keys are Kata's flat snake_case names;
// pointers tell a key that is absent from one set to its zero value.
type fileConfig struct {
	ServerAddr             *string `toml:"server_addr"`
	LogLevel               *string `toml:"log_level"`
	LogVport               *uint32 `toml:"log_vport"`
	DebugConsole           *bool   `toml:"debug_console"`
	DebugConsoleVport      *uint32 `toml:"debug_console_vport"`
	PassfdListenerPort     *uint32 `toml:"passfd_listener_port"`
	HotplugTimeout         any     `toml:"hotplug_timeout"`
	ContainerPipeSize      *int    `toml:"container_pipe_size"`
	DevMode                *bool   `toml:"dev_mode"`
	UnifiedCgroupHierarchy *bool   `toml:"unified_cgroup_hierarchy"`
	StateRoot              *string `toml:"state_root"`
	CgroupParent           *string `toml:"cgroup_parent"`
	SandboxPidsMax         *int64  `toml:"sandbox_pids_max"`
	MemAgentEnable         *bool   `toml:"mem_agent_enable"`
	PolicyFile             *string `toml:"policy_file"`
	// The mem-agent's tuning keys (memAgentKeys) are read from the file
	// as a map, so that their table serves the command line too.
}

// applyFile applies a TOML configuration file. Unknown keys are errors: a
// file is written for this agent, and a typo must not pass silently.
func applyFile(c *Config, name string, data []byte) error {
	var f fileConfig
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&f)
	if err != nil {
		return fmt.Errorf("config file %s: %w", name, err)
	}
	source := "config file " + name
	var raw map[string]any
	var unknown []string
	for _, k := range md.Undecoded() {
		if len(k) == 1 && memAgentKeys[k[0]] != nil {
			if raw == nil {
				if _, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&raw); err != nil {
					return fmt.Errorf("config file %s: %w", name, err)
				}
			}
			if err := setMemAgentKey(c, k[0], raw[k[0]]); err != nil {
				return invalidValue(source, k[0], fmt.Sprint(raw[k[0]]), err)
			}
			continue
		}
		unknown = append(unknown, k.String())
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("config file %s: unknown keys: %s", name, strings.Join(unknown, ", "))
	}
	if f.ServerAddr != nil {
		if *f.ServerAddr == "" {
			return invalidValue(source, "server_addr", "", fmt.Errorf("a value is required"))
		}
		c.ServerAddr = *f.ServerAddr
	}
	if f.LogLevel != nil {
		if c.LogLevel, err = ParseLevel(*f.LogLevel); err != nil {
			return invalidValue(source, "log_level", *f.LogLevel, err)
		}
	}
	setIf(&c.LogVport, f.LogVport)
	setIf(&c.DebugConsole, f.DebugConsole)
	setIf(&c.DebugConsoleVport, f.DebugConsoleVport)
	setIf(&c.PassfdListenerPort, f.PassfdListenerPort)
	setIf(&c.PolicyFile, f.PolicyFile)
	if f.HotplugTimeout != nil {
		if c.HotplugTimeout, err = fileTimeout(f.HotplugTimeout); err != nil {
			return invalidValue(source, "hotplug_timeout", fmt.Sprint(f.HotplugTimeout), err)
		}
	}
	if f.ContainerPipeSize != nil {
		if *f.ContainerPipeSize < 0 {
			return invalidValue(source, "container_pipe_size", fmt.Sprint(*f.ContainerPipeSize), fmt.Errorf("not a byte count"))
		}
		c.ContainerPipeSize = *f.ContainerPipeSize
	}
	setIf(&c.DevMode, f.DevMode)
	setIf(&c.UnifiedCgroupHierarchy, f.UnifiedCgroupHierarchy)
	setIf(&c.MemAgentEnable, f.MemAgentEnable)
	setIf(&c.StateRoot, f.StateRoot)
	setIf(&c.CgroupParent, f.CgroupParent)
	if f.SandboxPidsMax != nil {
		if err := checkPidsMax(*f.SandboxPidsMax); err != nil {
			return invalidValue(source, "sandbox_pids_max", fmt.Sprint(*f.SandboxPidsMax), err)
		}
		c.SandboxPidsMax = *f.SandboxPidsMax
	}
	return nil
}

func setIf[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

// fileTimeout accepts whole seconds or a duration string.
func fileTimeout(v any) (time.Duration, error) {
	switch t := v.(type) {
	case int64:
		if t <= 0 {
			return 0, fmt.Errorf("must be positive")
		}
		return time.Duration(t) * time.Second, nil
	case string:
		return parseTimeout(t)
	}
	return 0, fmt.Errorf("want whole seconds or a duration string")
}
