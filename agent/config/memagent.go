package config

import (
	"fmt"
	"math"
	"strconv"
)

// memAgentKeys are Kata's mem-agent tuning keys, agent.<key> on the
// kernel command line (Kata's runtime writes them there from its
// [agent] mem_agent settings) and <key> in the TOML file, each with the
// field it sets. mem_agent_enable, which turns the mem-agent on, is an
// ordinary key; these start it tuned.
var memAgentKeys = map[string]func(*Config) any{
	"mem_agent_memcg_disable":                      func(c *Config) any { return &c.MemAgentMemcg.Disabled },
	"mem_agent_memcg_swap":                         func(c *Config) any { return &c.MemAgentMemcg.Swap },
	"mem_agent_memcg_swappiness_max":               func(c *Config) any { return &c.MemAgentMemcg.SwappinessMax },
	"mem_agent_memcg_period_secs":                  func(c *Config) any { return &c.MemAgentMemcg.PeriodSecs },
	"mem_agent_memcg_period_psi_percent_limit":     func(c *Config) any { return &c.MemAgentMemcg.PeriodPSIPercentLimit },
	"mem_agent_memcg_eviction_psi_percent_limit":   func(c *Config) any { return &c.MemAgentMemcg.EvictionPSIPercentLimit },
	"mem_agent_memcg_eviction_run_aging_count_min": func(c *Config) any { return &c.MemAgentMemcg.EvictionRunAgingCountMin },
	"mem_agent_compact_disable":                    func(c *Config) any { return &c.MemAgentCompact.Disabled },
	"mem_agent_compact_period_secs":                func(c *Config) any { return &c.MemAgentCompact.PeriodSecs },
	"mem_agent_compact_period_psi_percent_limit":   func(c *Config) any { return &c.MemAgentCompact.PeriodPSIPercentLimit },
	"mem_agent_compact_psi_percent_limit":          func(c *Config) any { return &c.MemAgentCompact.CompactPSIPercentLimit },
	"mem_agent_compact_sec_max":                    func(c *Config) any { return &c.MemAgentCompact.CompactSecMax },
	"mem_agent_compact_order":                      func(c *Config) any { return &c.MemAgentCompact.CompactOrder },
	"mem_agent_compact_threshold":                  func(c *Config) any { return &c.MemAgentCompact.CompactThreshold },
	"mem_agent_compact_force_times":                func(c *Config) any { return &c.MemAgentCompact.CompactForceTimes },
}

// cmdlineText is a value from the kernel command line, which is all
// text; a TOML value has a type, and a string is no number there.
type cmdlineText string

// setMemAgentKey sets the field of one of memAgentKeys from v: the text
// after "=" on the command line (nil for a bare word), or a TOML value.
// Whether the value makes sense for the mem-agent is checked once all
// sources are read (checkMemAgent).
func setMemAgentKey(c *Config, key string, v any) error {
	switch p := memAgentKeys[key](c).(type) {
	case **bool:
		b, err := boolValue(v)
		*p = &b
		return err
	case **uint32:
		n, err := uintValue(v, math.MaxUint32)
		u := uint32(n)
		*p = &u
		return err
	case **uint64:
		n, err := uintValue(v, math.MaxUint64)
		*p = &n
		return err
	case **int64:
		n, err := intValue(v)
		*p = &n
		return err
	}
	panic("memAgentKeys: " + key + " has a field of no known type")
}

func boolValue(v any) (bool, error) {
	switch t := v.(type) {
	case nil:
		return true, nil
	case cmdlineText:
		return parseFlag(true, string(t))
	case bool:
		return t, nil
	}
	return false, fmt.Errorf("not a boolean")
}

func uintValue(v any, limit uint64) (uint64, error) {
	var n uint64
	switch t := v.(type) {
	case cmdlineText:
		var err error
		if n, err = strconv.ParseUint(string(t), 10, 64); err != nil {
			return 0, fmt.Errorf("not a whole number")
		}
	case int64:
		if t < 0 {
			return 0, fmt.Errorf("not a whole number")
		}
		n = uint64(t)
	default:
		return 0, fmt.Errorf("not a whole number")
	}
	if n > limit {
		return 0, fmt.Errorf("above %d", limit)
	}
	return n, nil
}

func intValue(v any) (int64, error) {
	switch t := v.(type) {
	case cmdlineText:
		n, err := strconv.ParseInt(string(t), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("not a whole number")
		}
		return n, nil
	case int64:
		return t, nil
	}
	return 0, fmt.Errorf("not a whole number")
}
