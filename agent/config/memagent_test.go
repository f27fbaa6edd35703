package config

import (
	"math"
	"strings"
	"testing"

	"github.com/wren-vm/wren/agent/memagent"
)

func loadWith(t *testing.T, args []string, files fakeFS) (Loaded, error) {
	t.Helper()
	return Load(Input{Args: args, PID1: true, Getenv: func(string) string { return "" }, ReadFile: files.read})
}

// TestMemAgentOffByDefault: as in Kata, the mem-agent runs only when
// asked to.
func TestMemAgentOffByDefault(t *testing.T) {
	got, err := loadWith(t, nil, fakeFS{"/proc/cmdline": "console=ttyS0"})
	if err != nil {
		t.Fatal(err)
	}
	if c := got.Config; c.MemAgentEnable || c.MemAgentMemcg != (memagent.MemcgUpdate{}) || c.MemAgentCompact != (memagent.CompactUpdate{}) {
		t.Fatalf("%+v", c)
	}
}

// TestMemAgentKernelCmdline: the keys Kata's runtime writes (agent.*,
// booleans as its Rust runtime prints them), each onto its field, in
// any order.
func TestMemAgentKernelCmdline(t *testing.T) {
	cmdline := "agent.mem_agent_memcg_swap=true agent.mem_agent_memcg_disable=false " +
		"agent.mem_agent_memcg_swappiness_max=70 agent.mem_agent_memcg_period_secs=120 " +
		"agent.mem_agent_memcg_period_psi_percent_limit=2 agent.mem_agent_memcg_eviction_psi_percent_limit=3 " +
		"agent.mem_agent_memcg_eviction_run_aging_count_min=4 agent.mem_agent_compact_disable=true " +
		"agent.mem_agent_compact_period_secs=300 agent.mem_agent_compact_period_psi_percent_limit=5 " +
		"agent.mem_agent_compact_psi_percent_limit=6 agent.mem_agent_compact_sec_max=180 " +
		"agent.mem_agent_compact_order=10 agent.mem_agent_compact_threshold=2048 " +
		"agent.mem_agent_compact_force_times=18446744073709551615 agent.mem_agent_enable=1 psi=1"
	got, err := loadWith(t, nil, fakeFS{"/proc/cmdline": cmdline})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.IgnoredCmdline) != 0 {
		t.Errorf("ignored: %q", got.IgnoredCmdline)
	}
	c := got.Config
	if !c.MemAgentEnable {
		t.Error("agent.mem_agent_enable=1 did not turn the mem-agent on")
	}
	m, err := memagent.DefaultMemcg().With(c.MemAgentMemcg)
	if err != nil {
		t.Fatal(err)
	}
	if want := (memagent.MemcgConfig{Swap: true, SwappinessMax: 70, PeriodSecs: 120, PeriodPSIPercentLimit: 2, EvictionPSIPercentLimit: 3, EvictionRunAgingCountMin: 4}); m != want {
		t.Errorf("memcg %+v, want %+v", m, want)
	}
	cc, err := memagent.DefaultCompact().With(c.MemAgentCompact)
	if err != nil {
		t.Fatal(err)
	}
	if want := (memagent.CompactConfig{Disabled: true, PeriodSecs: 300, PeriodPSIPercentLimit: 5, CompactPSIPercentLimit: 6, CompactSecMax: 180, CompactOrder: 10, CompactThreshold: 2048, CompactForceTimes: math.MaxUint64}); cc != want {
		t.Errorf("compact %+v, want %+v", cc, want)
	}
	if len(memAgentKeys) != 15 {
		t.Errorf("%d tuning keys, Kata has 15", len(memAgentKeys))
	}
	// --help lists each of them, under both names.
	for key := range memAgentKeys {
		found := false
		for _, k := range cmdlineOnly {
			found = found || strings.HasPrefix(k.cmdline, "agent."+key+"=") && k.file == key
		}
		if !found {
			t.Errorf("--help does not list agent.%s", key)
		}
	}
}

// TestMemAgentFileAndFlag: the TOML file takes the same keys without
// "agent.", over the command line; --mem-agent-enable is over both.
func TestMemAgentFileAndFlag(t *testing.T) {
	files := fakeFS{
		"/proc/cmdline": "agent.mem_agent_enable=0 agent.mem_agent_memcg_period_secs=60 agent.config_file=/etc/wren.toml",
		"/etc/wren.toml": `mem_agent_enable = true
mem_agent_memcg_period_secs = 90
mem_agent_compact_disable = true
mem_agent_compact_sec_max = 0
`,
	}
	got, err := loadWith(t, nil, files)
	if err != nil {
		t.Fatal(err)
	}
	c := got.Config
	if !c.MemAgentEnable || *c.MemAgentMemcg.PeriodSecs != 90 || !*c.MemAgentCompact.Disabled || *c.MemAgentCompact.CompactSecMax != 0 {
		t.Fatalf("file over cmdline: %+v", c)
	}
	if c.MemAgentMemcg.Swap != nil || c.MemAgentCompact.CompactOrder != nil {
		t.Errorf("keys no source set were set: %+v", c)
	}
	for _, tt := range []struct {
		flag string
		want bool
	}{{"--mem-agent-enable=false", false}, {"--mem-agent-enable", true}} {
		got, err := loadWith(t, []string{tt.flag}, files)
		if err != nil || got.Config.MemAgentEnable != tt.want {
			t.Errorf("%s: %v, %v", tt.flag, got.Config.MemAgentEnable, err)
		}
	}
	got, err = loadWith(t, []string{"--mem-agent-enable"}, fakeFS{"/proc/cmdline": ""})
	if err != nil || !got.Config.MemAgentEnable {
		t.Errorf("flag alone: %v, %v", got.Config.MemAgentEnable, err)
	}
}

// TestMemAgentBadValues: a malformed value, or one the mem-agent would
// refuse, stops the configuration, naming the key.
func TestMemAgentBadValues(t *testing.T) {
	for _, tt := range []struct {
		cmdline, file string
		args          []string
		want          string
	}{
		{cmdline: "agent.mem_agent_enable=maybe", want: `invalid value "maybe" for agent.mem_agent_enable`},
		{cmdline: "agent.mem_agent_memcg_swap=2", want: `invalid value "2" for agent.mem_agent_memcg_swap`},
		{cmdline: "agent.mem_agent_compact_order=x", want: `invalid value "x" for agent.mem_agent_compact_order`},
		{cmdline: "agent.mem_agent_memcg_period_secs", want: `invalid value "" for agent.mem_agent_memcg_period_secs`},
		{cmdline: "agent.mem_agent_memcg_swappiness_max=4294967296", want: "agent.mem_agent_memcg_swappiness_max"},
		{cmdline: "agent.mem_agent_memcg_swappiness_max=300", want: "agent.mem_agent_memcg_*: mem-agent swappiness_max 300"},
		{cmdline: "agent.mem_agent_compact_sec_max=-1", want: "agent.mem_agent_compact_*: mem-agent compact_sec_max -1"},
		{cmdline: "agent.mem_agent_compact_period_secs=0", want: "mem-agent period_secs 0"},
		{file: "mem_agent_memcg_swap = 1", want: `invalid value "1" for mem_agent_memcg_swap`},
		{file: "mem_agent_compact_threshold = -3", want: `invalid value "-3" for mem_agent_compact_threshold`},
		{file: `mem_agent_compact_order = "9"`, want: `invalid value "9" for mem_agent_compact_order`},
		{file: "mem_agent_nope = 1", want: "unknown keys: mem_agent_nope"},
		{args: []string{"--mem-agent-enable=sometimes"}, want: "mem-agent-enable"},
	} {
		files := fakeFS{"/proc/cmdline": tt.cmdline}
		if tt.file != "" {
			files["/proc/cmdline"] = "agent.config_file=/w.toml"
			files["/w.toml"] = tt.file
		}
		_, err := loadWith(t, tt.args, files)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q %q %q: %v, want %q", tt.cmdline, tt.file, tt.args, err, tt.want)
		}
	}
}
