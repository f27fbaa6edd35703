package config

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// source says where else than a flag a setting can come from: its key on
// the kernel command line, its environment variable and its key in the
// TOML file ("" where it has none). A test holds these to what Load reads.
type source struct {
	flag, cmdline, env, file string
}

// flagSources are the flags' other sources, in the order Usage lists them.
var flagSources = []source{
	{flag: "server-addr", cmdline: "agent.server_addr", env: "WREN_AGENT_SERVER_ADDR", file: "server_addr"},
	{flag: "log-level", cmdline: "agent.log", env: "WREN_AGENT_LOG_LEVEL", file: "log_level"},
	{flag: "config", cmdline: "agent.config_file"},
	{flag: "state-root", file: "state_root"},
	{flag: "cgroup-parent", file: "cgroup_parent"},
	{flag: "sandbox-pids-max", cmdline: "agent.sandbox_pids_max", file: "sandbox_pids_max"},
	{flag: "mem-agent-enable", cmdline: "agent.mem_agent_enable", file: "mem_agent_enable"},
	{flag: "policy-file", cmdline: "agent.policy_file", env: "WREN_AGENT_POLICY_FILE", file: "policy_file"},
	{flag: "kernel-cmdline"},
	{flag: "version"},
}

// cmdlineOnly are the settings without a flag: the kernel command line
// (as a Kata shim passes them) or the TOML file set them.
var cmdlineOnly = []struct {
	cmdline, file, usage string
}{
	{"agent.log_vport=PORT", "log_vport", "stream the JSON log to the first host connection on this vsock port"},
	{"agent.debug_console", "debug_console", "a shell for the host: on vsock agent.debug_console_vport, else on /dev/console"},
	{"agent.debug_console_vport=PORT", "debug_console_vport", "the debug console's vsock port"},
	{"agent.passfd_listener_port=PORT", "passfd_listener_port", "the vsock port the host connects process streams to (Kata's passfd IO); 0: off"},
	{"agent.hotplug_timeout=DURATION", "hotplug_timeout", "bound on every wait for a device: whole seconds or a Go duration (default 3s)"},
	{"agent.container_pipe_size=BYTES", "container_pipe_size", "size of container stdio pipes; 0 keeps the kernel's (default 262144)"},
	{"agent.devmode", "dev_mode", "let the agent dump core"},
	{"systemd.unified_cgroup_hierarchy=1 or cgroup_no_v1=all", "unified_cgroup_hierarchy", "cgroup v2 in the guest"},
	{"agent.mem_agent_memcg_disable=BOOL", "mem_agent_memcg_disable", "mem-agent: no reclaim of cold cgroup memory (default false)"},
	{"agent.mem_agent_memcg_swap=BOOL", "mem_agent_memcg_swap", "mem-agent: reclaim anonymous pages too when the guest has swap (default false)"},
	{"agent.mem_agent_memcg_swappiness_max=N", "mem_agent_memcg_swappiness_max", "mem-agent: cap on the anonymous share of a reclaim, 0 to 200 (default 50)"},
	{"agent.mem_agent_memcg_period_secs=N", "mem_agent_memcg_period_secs", "mem-agent: seconds between reclaim runs (default 600)"},
	{"agent.mem_agent_memcg_period_psi_percent_limit=N", "mem_agent_memcg_period_psi_percent_limit", "mem-agent: leave a cgroup stalled more than N% of the period (default 1)"},
	{"agent.mem_agent_memcg_eviction_psi_percent_limit=N", "mem_agent_memcg_eviction_psi_percent_limit", "mem-agent: stop a reclaim that stalls the cgroup more than N% (default 1)"},
	{"agent.mem_agent_memcg_eviction_run_aging_count_min=N", "mem_agent_memcg_eviction_run_aging_count_min", "mem-agent: runs that see a cgroup before it is reclaimed from (default 3)"},
	{"agent.mem_agent_compact_disable=BOOL", "mem_agent_compact_disable", "mem-agent: no periodic compaction (default false)"},
	{"agent.mem_agent_compact_period_secs=N", "mem_agent_compact_period_secs", "mem-agent: seconds between compaction runs (default 600)"},
	{"agent.mem_agent_compact_period_psi_percent_limit=N", "mem_agent_compact_period_psi_percent_limit", "mem-agent: no compaction after a period stalled more than N% (default 1)"},
	{"agent.mem_agent_compact_psi_percent_limit=N", "mem_agent_compact_psi_percent_limit", "mem-agent: stop a compaction that stalls the guest more than N% (default 5)"},
	{"agent.mem_agent_compact_sec_max=N", "mem_agent_compact_sec_max", "mem-agent: stop a compaction after N seconds (default 1800)"},
	{"agent.mem_agent_compact_order=N", "mem_agent_compact_order", "mem-agent: the page order compaction gathers free pages for (default 9)"},
	{"agent.mem_agent_compact_threshold=N", "mem_agent_compact_threshold", "mem-agent: pages of new fragmentation worth a compaction (default 1024)"},
	{"agent.mem_agent_compact_force_times=N", "mem_agent_compact_force_times", "mem-agent: idle runs that force a compaction (default never)"},
}

// Usage writes what --help prints: every flag with its description, its
// kernel command line key and environment variable, then the settings
// only the kernel command line and the file carry.
func Usage(w io.Writer) {
	fmt.Fprint(w, `usage: wren-agent [flags]

The in-guest agent of a VM-isolated pod: it serves the Kata Containers agent API
over ttrpc and, as PID 1, is the guest's init. Each setting comes from, lowest
to highest precedence: the default, the kernel command line (read as PID 1 or
with --kernel-cmdline), the TOML file (--config or agent.config_file), the
environment, the flag.

Flags:
`)
	fs, _ := newFlagSet(&Loaded{})
	for _, s := range flagSources {
		f := fs.Lookup(s.flag)
		if f == nil {
			continue
		}
		name, usage := flag.UnquoteUsage(f)
		head := "--" + f.Name
		if name != "" {
			head += " " + name
		}
		fmt.Fprintf(w, "  %-32s %s\n", head, usage)
		var also []string
		if s.cmdline != "" {
			also = append(also, "kernel: "+s.cmdline)
		}
		if s.env != "" {
			also = append(also, "env: "+s.env)
		}
		if s.file != "" {
			also = append(also, "file: "+s.file)
		}
		if len(also) > 0 {
			fmt.Fprintf(w, "  %-32s %s\n", "", strings.Join(also, "   "))
		}
	}
	fmt.Fprint(w, "\nKernel command line (and file) only:\n")
	for _, k := range cmdlineOnly {
		if len(k.cmdline) <= 32 {
			fmt.Fprintf(w, "  %-32s %s (file: %s)\n", k.cmdline, k.usage, k.file)
		} else {
			fmt.Fprintf(w, "  %s\n  %-32s %s (file: %s)\n", k.cmdline, "", k.usage, k.file)
		}
	}
	fmt.Fprint(w, "\nUnknown agent.* keys are logged and ignored; unknown file keys are errors.\n")
}
