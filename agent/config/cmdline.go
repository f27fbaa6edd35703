package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// cmdlineSource names the kernel command line in errors.
const cmdlineSource = "kernel command line"

// SplitCmdline splits a kernel command line into words the way the kernel
// does: on white space, except inside double quotes, which are removed.
func SplitCmdline(s string) []string {
	var words []string
	var cur strings.Builder
	inQuote, inWord := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			inWord = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n' || r == '\r'):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// cmdlineResult is what the kernel command line contributed.
type cmdlineResult struct {
	// configFile is the value of agent.config_file, if present.
	configFile string
	// ignored lists agent.* words this agent does not know.
	ignored []string
}

// applyCmdline applies Kata's agent keys found in the kernel command line.
// A malformed value of a known key is an error naming the key and value; an
// unknown agent.* key is reported in ignored, so that a newer shim passing a
// key this agent does not know cannot stop the guest from booting.
func applyCmdline(c *Config, cmdline string) (cmdlineResult, error) {
	var res cmdlineResult
	for _, word := range SplitCmdline(cmdline) {
		key, value, hasValue := strings.Cut(word, "=")
		known, err := applyCmdlineKey(c, &res, key, value, hasValue)
		if !known {
			if strings.HasPrefix(key, "agent.") {
				res.ignored = append(res.ignored, word)
			}
			continue
		}
		if err != nil {
			return res, invalidValue(cmdlineSource, key, value, err)
		}
	}
	return res, nil
}

// applyCmdlineKey applies one key of the kernel command line; known is
// false for a key this agent does not know.
func applyCmdlineKey(c *Config, res *cmdlineResult, key, value string, hasValue bool) (known bool, err error) {
	switch key {
	case "agent.server_addr":
		err = needValue(hasValue, value)
		if err == nil {
			c.ServerAddr = value
		}
	case "agent.log":
		c.LogLevel, err = ParseLevel(value)
	case "agent.log_vport":
		c.LogVport, err = parsePort(value)
	case "agent.debug_console":
		c.DebugConsole, err = parseFlag(hasValue, value)
	case "agent.policy_file":
		err = needValue(hasValue, value)
		if err == nil {
			c.PolicyFile = value
		}
	case "agent.passfd_listener_port":
		c.PassfdListenerPort, err = parsePort(value)
	case "agent.debug_console_vport":
		c.DebugConsoleVport, err = parsePort(value)
	case "agent.hotplug_timeout":
		c.HotplugTimeout, err = parseTimeout(value)
	case "agent.container_pipe_size":
		c.ContainerPipeSize, err = parsePipeSize(value)
	case "agent.sandbox_pids_max":
		c.SandboxPidsMax, err = parsePidsMax(value)
	case "agent.config_file":
		err = needValue(hasValue, value)
		res.configFile = value
	case "agent.devmode":
		c.DevMode, err = parseFlag(hasValue, value)
	case "systemd.unified_cgroup_hierarchy":
		c.UnifiedCgroupHierarchy, err = parseFlag(hasValue, value)
	case "cgroup_no_v1":
		if value == "all" {
			c.UnifiedCgroupHierarchy = true
		}
	case "agent.mem_agent_enable":
		c.MemAgentEnable, err = parseFlag(hasValue, value)
	default:
		return applyMemAgentCmdlineKey(c, key, value, hasValue)
	}
	return true, err
}

// applyMemAgentCmdlineKey applies an agent.mem_agent_* tuning key; known
// is false for any other key.
func applyMemAgentCmdlineKey(c *Config, key, value string, hasValue bool) (known bool, err error) {
	name, isAgent := strings.CutPrefix(key, "agent.")
	if !isAgent || memAgentKeys[name] == nil {
		return false, nil
	}
	var v any
	if hasValue {
		v = cmdlineText(value)
	}
	return true, setMemAgentKey(c, name, v)
}

func needValue(hasValue bool, value string) error {
	if !hasValue || value == "" {
		return fmt.Errorf("a value is required")
	}
	return nil
}

// parseFlag reads a boolean that may also appear as a bare word.
func parseFlag(hasValue bool, value string) (bool, error) {
	if !hasValue {
		return true, nil
	}
	switch strings.ToLower(value) {
	case "1", "y", "yes", "on", "true":
		return true, nil
	case "0", "n", "no", "off", "false":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean")
}

func parsePort(value string) (uint32, error) {
	n, err := strconv.ParseUint(value, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("not a port number")
	}
	return uint32(n), nil
}

// parseTimeout takes Kata's whole seconds or a Go duration ("1500ms", the
// form of Kata's Go agent); either way it must be positive.
func parseTimeout(value string) (time.Duration, error) {
	var d time.Duration
	if n, err := strconv.ParseUint(value, 10, 32); err == nil {
		d = time.Duration(n) * time.Second
	} else if d, err = time.ParseDuration(value); err != nil {
		return 0, fmt.Errorf("not a number of seconds or a duration")
	}
	if d <= 0 {
		return 0, fmt.Errorf("must be positive")
	}
	return d, nil
}

func parsePipeSize(value string) (int, error) {
	n, err := strconv.ParseInt(value, 10, 32)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("not a byte count")
	}
	return int(n), nil
}

// parsePidsMax takes a sandbox pids ceiling: 0 (derive it) or at least
// MinSandboxPidsMax.
func parsePidsMax(value string) (int64, error) {
	n, err := strconv.ParseInt(value, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("not a number of tasks")
	}
	if err := checkPidsMax(n); err != nil {
		return 0, err
	}
	return n, nil
}

func checkPidsMax(n int64) error {
	if n != 0 && n < MinSandboxPidsMax {
		return fmt.Errorf("want 0 (derived from the guest's limits) or at least %d", MinSandboxPidsMax)
	}
	return nil
}
