package config

import (
	"errors"
	"io/fs"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSplitCmdline(t *testing.T) {
	got := SplitCmdline("console=ttyS0  agent.log=debug\tquiet x=\"a b\" \n")
	want := []string{"console=ttyS0", "agent.log=debug", "quiet", "x=a b"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("SplitCmdline = %q, want %q", got, want)
	}
}

// fakeFS serves the kernel command line and config files from memory.
type fakeFS map[string]string

func (f fakeFS) read(name string) ([]byte, error) {
	if s, ok := f[name]; ok {
		return []byte(s), nil
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

func TestCmdline(t *testing.T) {
	tests := []struct {
		name    string
		cmdline string
		check   func(Config) bool
		ignored []string
		wantErr string
	}{
		{name: "defaults", cmdline: "console=ttyS0 quiet", check: func(c Config) bool { return c == Default() }},
		{name: "server addr", cmdline: "agent.server_addr=vsock://-1:2048", check: func(c Config) bool { return c.ServerAddr == "vsock://-1:2048" }},
		{name: "log", cmdline: "agent.log=debug", check: func(c Config) bool { return c.LogLevel == slog.LevelDebug }},
		{name: "log trace", cmdline: "agent.log=trace", check: func(c Config) bool { return c.LogLevel == LevelTrace }},
		{name: "log vport", cmdline: "agent.log_vport=1025", check: func(c Config) bool { return c.LogVport == 1025 }},
		{name: "debug console bare", cmdline: "agent.debug_console agent.debug_console_vport=1026", check: func(c Config) bool { return c.DebugConsole && c.DebugConsoleVport == 1026 }},
		{name: "debug console off", cmdline: "agent.debug_console=false", check: func(c Config) bool { return !c.DebugConsole }},
		{name: "hotplug seconds", cmdline: "agent.hotplug_timeout=10", check: func(c Config) bool { return c.HotplugTimeout == 10*time.Second }},
		{name: "hotplug duration", cmdline: "agent.hotplug_timeout=1500ms", check: func(c Config) bool { return c.HotplugTimeout == 1500*time.Millisecond }},
		{name: "pipe size", cmdline: "agent.container_pipe_size=1048576", check: func(c Config) bool { return c.ContainerPipeSize == 1<<20 }},
		{name: "pipe size default", cmdline: "quiet", check: func(c Config) bool { return c.ContainerPipeSize == DefaultContainerPipeSize }},
		// Kata's 0 means the kernel's default, and must still mean it.
		{name: "pipe size kernel default", cmdline: "agent.container_pipe_size=0", check: func(c Config) bool { return c.ContainerPipeSize == 0 }},
		{name: "devmode", cmdline: "agent.devmode", check: func(c Config) bool { return c.DevMode }},
		{name: "sandbox pids max", cmdline: "agent.sandbox_pids_max=4096", check: func(c Config) bool { return c.SandboxPidsMax == 4096 }},
		{name: "sandbox pids max derived", cmdline: "agent.sandbox_pids_max=0", check: func(c Config) bool { return c.SandboxPidsMax == 0 }},
		{name: "cgroup v2 systemd", cmdline: "systemd.unified_cgroup_hierarchy=1", check: func(c Config) bool { return c.UnifiedCgroupHierarchy }},
		{name: "cgroup v2 no_v1", cmdline: "cgroup_no_v1=all", check: func(c Config) bool { return c.UnifiedCgroupHierarchy }},
		{name: "cgroup v1", cmdline: "systemd.unified_cgroup_hierarchy=0", check: func(c Config) bool { return !c.UnifiedCgroupHierarchy }},
		{name: "last wins", cmdline: "agent.log=debug agent.log=warn", check: func(c Config) bool { return c.LogLevel == slog.LevelWarn }},
		{
			name: "unknown agent keys ignored", cmdline: "agent.passfd_listener_port=1027 agent.future_thing agent.log=error foo.bar=1",
			check:   func(c Config) bool { return c.LogLevel == slog.LevelError && c.PassfdListenerPort == 1027 },
			ignored: []string{"agent.future_thing"},
		},
		{name: "bad log", cmdline: "agent.log=loud", wantErr: `invalid value "loud" for agent.log`},
		{name: "bad vport", cmdline: "agent.log_vport=-1", wantErr: `invalid value "-1" for agent.log_vport`},
		{name: "bad hotplug", cmdline: "agent.hotplug_timeout=0", wantErr: `invalid value "0" for agent.hotplug_timeout`},
		{name: "bad hotplug text", cmdline: "agent.hotplug_timeout=soon", wantErr: `invalid value "soon" for agent.hotplug_timeout`},
		{name: "bad pipe size", cmdline: "agent.container_pipe_size=big", wantErr: `invalid value "big" for agent.container_pipe_size`},
		{name: "bad bool", cmdline: "agent.devmode=maybe", wantErr: `invalid value "maybe" for agent.devmode`},
		{name: "sandbox pids max too small", cmdline: "agent.sandbox_pids_max=10", wantErr: `invalid value "10" for agent.sandbox_pids_max`},
		{name: "sandbox pids max negative", cmdline: "agent.sandbox_pids_max=-1", wantErr: `invalid value "-1" for agent.sandbox_pids_max`},
		{name: "sandbox pids max text", cmdline: "agent.sandbox_pids_max=lots", wantErr: `invalid value "lots" for agent.sandbox_pids_max`},
		{name: "empty server addr", cmdline: "agent.server_addr=", wantErr: `invalid value "" for agent.server_addr`},
		{name: "malformed server addr", cmdline: "agent.server_addr=tcp://1:2", wantErr: `server address "tcp://1:2"`},
		{name: "hvsock server addr", cmdline: "agent.server_addr=hvsock:///x:1", wantErr: "host-side dial form"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Load(Input{
				PID1:     true,
				Getenv:   func(string) string { return "" },
				ReadFile: fakeFS{"/proc/cmdline": tt.cmdline}.read,
			})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(got.Config) {
				t.Errorf("config %+v does not match", got.Config)
			}
			if !reflect.DeepEqual(got.IgnoredCmdline, tt.ignored) {
				t.Errorf("ignored = %q, want %q", got.IgnoredCmdline, tt.ignored)
			}
		})
	}
}

func TestCmdlineReadOnlyWhenAsked(t *testing.T) {
	files := fakeFS{"/proc/cmdline": "agent.log=debug agent.server_addr=vsock://-1:9"}
	env := func(string) string { return "" }
	got, err := Load(Input{Getenv: env, ReadFile: files.read})
	if err != nil {
		t.Fatal(err)
	}
	if got.Config != Default() {
		t.Fatalf("host agent read the kernel command line: %+v", got.Config)
	}
	got, err = Load(Input{Args: []string{"--kernel-cmdline"}, Getenv: env, ReadFile: files.read})
	if err != nil {
		t.Fatal(err)
	}
	if got.Config.LogLevel != slog.LevelDebug || got.Config.ServerAddr != "vsock://-1:9" {
		t.Fatalf("--kernel-cmdline ignored: %+v", got.Config)
	}
}

func TestPrecedence(t *testing.T) {
	files := fakeFS{
		"/proc/cmdline": "agent.server_addr=vsock://-1:1 agent.log=debug agent.log_vport=5 agent.config_file=/etc/wren.toml",
		"/etc/wren.toml": `server_addr = "vsock://-1:2"
log_level = "warn"
debug_console = true
hotplug_timeout = "250ms"
`,
		"/other.toml": `log_vport = 7`,
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(c *Config)
	}{
		{
			name: "file over cmdline",
			want: func(c *Config) {
				c.ServerAddr, c.LogLevel, c.LogVport, c.DebugConsole = "vsock://-1:2", slog.LevelWarn, 5, true
				c.HotplugTimeout, c.ConfigFile = 250*time.Millisecond, "/etc/wren.toml"
			},
		},
		{
			name: "env over file",
			env:  map[string]string{"WREN_AGENT_SERVER_ADDR": "unix:///env.sock", "WREN_AGENT_LOG_LEVEL": "error"},
			want: func(c *Config) {
				c.ServerAddr, c.LogLevel, c.LogVport, c.DebugConsole = "unix:///env.sock", slog.LevelError, 5, true
				c.HotplugTimeout, c.ConfigFile = 250*time.Millisecond, "/etc/wren.toml"
			},
		},
		{
			name: "flags over env",
			args: []string{"--server-addr", "unix://@flag", "--log-level", "info", "--state-root", "/tmp/st"},
			env:  map[string]string{"WREN_AGENT_SERVER_ADDR": "unix:///env.sock", "WREN_AGENT_LOG_LEVEL": "error"},
			want: func(c *Config) {
				c.ServerAddr, c.LogLevel, c.LogVport, c.DebugConsole = "unix://@flag", slog.LevelInfo, 5, true
				c.HotplugTimeout, c.ConfigFile, c.StateRoot = 250*time.Millisecond, "/etc/wren.toml", "/tmp/st"
			},
		},
		{
			name: "config flag replaces cmdline file",
			args: []string{"--config", "/other.toml"},
			want: func(c *Config) {
				c.ServerAddr, c.LogLevel, c.LogVport, c.ConfigFile = "vsock://-1:1", slog.LevelDebug, 7, "/other.toml"
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Load(Input{
				Args:     tt.args,
				PID1:     true,
				Getenv:   func(k string) string { return tt.env[k] },
				ReadFile: files.read,
			})
			if err != nil {
				t.Fatal(err)
			}
			want := Default()
			tt.want(&want)
			if got.Config != want {
				t.Errorf("got  %+v\nwant %+v", got.Config, want)
			}
		})
	}
}

func TestFileErrors(t *testing.T) {
	tests := []struct {
		name, file, wantErr string
	}{
		{"unknown key", "log_level = \"info\"\nlog_levle = \"debug\"\n", "unknown keys: log_levle"},
		{"unknown table", "[endpoints]\nallowed = []\n", "unknown keys: endpoints"},
		{"bad level", `log_level = "shout"`, `invalid value "shout" for log_level`},
		{"bad type", `log_vport = "x"`, "config file /c.toml"},
		{"negative timeout", `hotplug_timeout = -1`, `invalid value "-1" for hotplug_timeout`},
		{"negative pipe", `container_pipe_size = -5`, `invalid value "-5" for container_pipe_size`},
		{"small pids max", `sandbox_pids_max = 63`, `invalid value "63" for sandbox_pids_max`},
		{"syntax", `server_addr = `, "config file /c.toml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(Input{
				Args:     []string{"--config", "/c.toml"},
				Getenv:   func(string) string { return "" },
				ReadFile: fakeFS{"/c.toml": tt.file}.read,
			})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestCgroupParent(t *testing.T) {
	for _, tt := range []struct {
		args          []string
		want, wantErr string
	}{
		{args: nil, want: "wren"},
		{args: []string{"--cgroup-parent", "pods/a"}, want: "pods/a"},
		{args: []string{"--cgroup-parent", "/abs"}, wantErr: "relative"},
		{args: []string{"--cgroup-parent", "a/../b"}, wantErr: `bad path element ".."`},
	} {
		got, err := Load(Input{Args: tt.args, Getenv: func(string) string { return "" }, ReadFile: fakeFS{}.read})
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: err = %v, want %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got.Config.CgroupParent != tt.want {
			t.Errorf("%q: %q, %v; want %q", tt.args, got.Config.CgroupParent, err, tt.want)
		}
	}
}

func TestSandboxPidsMax(t *testing.T) {
	files := fakeFS{"/proc/cmdline": "agent.sandbox_pids_max=8192", "/c.toml": "sandbox_pids_max = 2048\n"}
	for _, tt := range []struct {
		args    []string
		pid1    bool
		want    int64
		wantErr string
	}{
		{want: 0},
		{pid1: true, want: 8192},
		{pid1: true, args: []string{"--config", "/c.toml"}, want: 2048},
		{pid1: true, args: []string{"--config", "/c.toml", "--sandbox-pids-max", "256"}, want: 256},
		{args: []string{"--sandbox-pids-max", "0"}, want: 0},
		{args: []string{"--sandbox-pids-max", "63"}, wantErr: `invalid value "63" for --sandbox-pids-max`},
		{args: []string{"--sandbox-pids-max", "-5"}, wantErr: `invalid value "-5" for --sandbox-pids-max`},
	} {
		got, err := Load(Input{Args: tt.args, PID1: tt.pid1, Getenv: func(string) string { return "" }, ReadFile: files.read})
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: err = %v, want %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got.Config.SandboxPidsMax != tt.want {
			t.Errorf("%q pid1=%v: %d, %v; want %d", tt.args, tt.pid1, got.Config.SandboxPidsMax, err, tt.want)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	env := func(k string) string {
		if k == "WREN_AGENT_LOG_LEVEL" {
			return "chatty"
		}
		return ""
	}
	if _, err := Load(Input{Getenv: env, ReadFile: fakeFS{}.read}); err == nil || !strings.Contains(err.Error(), "WREN_AGENT_LOG_LEVEL") {
		t.Errorf("bad env level: %v", err)
	}
	if _, err := Load(Input{Args: []string{"--config", "/missing.toml"}, ReadFile: fakeFS{}.read}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing config file: %v", err)
	}
	if _, err := Load(Input{PID1: true, ReadFile: fakeFS{}.read}); err == nil || !strings.Contains(err.Error(), "kernel command line") {
		t.Errorf("unreadable cmdline: %v", err)
	}
	if _, err := Load(Input{Args: []string{"--bogus"}, ReadFile: fakeFS{}.read}); err == nil {
		t.Error("unknown flag accepted")
	}
	if _, err := Load(Input{Args: []string{"stray"}, ReadFile: fakeFS{}.read}); err == nil {
		t.Error("stray argument accepted")
	}
	if got, err := Load(Input{Args: []string{"--version"}, ReadFile: fakeFS{}.read}); err != nil || !got.ShowVersion {
		t.Errorf("--version: %+v %v", got, err)
	}
}

func FuzzCmdline(f *testing.F) {
	for _, s := range []string{"agent.log=debug", "agent.hotplug_timeout=3 quiet", `x="a b" agent.debug_console`, "agent.server_addr=vsock://-1:1024", "agent.container_pipe_size=99999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cmdline string) {
		c := Default()
		if _, err := applyCmdline(&c, cmdline); err != nil {
			return
		}
		if c.HotplugTimeout <= 0 || c.ContainerPipeSize < 0 {
			t.Fatalf("accepted out-of-range config from %q: %+v", cmdline, c)
		}
	})
}
