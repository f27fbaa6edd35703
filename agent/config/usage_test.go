package config

import (
	"bytes"
	"flag"
	"strings"
	"testing"
)

// flagSamples are a value of each flag that differs from its default, as
// the flag, the kernel command line and the environment write it, and as
// a TOML value.
var flagSamples = map[string]struct{ text, toml string }{
	"server-addr":      {"unix:///sample.sock", `"unix:///sample.sock"`},
	"log-level":        {"debug", `"debug"`},
	"config":           {"/sample.toml", ""},
	"state-root":       {"/sample", `"/sample"`},
	"cgroup-parent":    {"sample", `"sample"`},
	"sandbox-pids-max": {"128", "128"},
	"mem-agent-enable": {"true", "true"},
	"policy-file":      {"/sample.rego", `"/sample.rego"`},
}

// --help lists every flag the agent parses, each with its sources.
func TestUsageListsEveryFlag(t *testing.T) {
	var b bytes.Buffer
	Usage(&b)
	help := b.String()
	fs, _ := newFlagSet(&Loaded{})
	documented := map[string]bool{}
	for _, s := range flagSources {
		documented[s.flag] = true
		if fs.Lookup(s.flag) == nil {
			t.Errorf("flagSources names --%s, which the agent does not parse", s.flag)
		}
		for _, also := range []string{s.cmdline, s.env, s.file} {
			if also != "" && !strings.Contains(help, also) {
				t.Errorf("--help does not name %s for --%s", also, s.flag)
			}
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if !documented[f.Name] {
			t.Errorf("--%s has no entry in flagSources", f.Name)
		}
		if !strings.Contains(help, "--"+f.Name+" ") && !strings.Contains(help, "--"+f.Name+"\n") {
			t.Errorf("--help does not list --%s", f.Name)
		}
	})
}

// Every kernel command line key and environment variable --help names is
// one Load reads, and every file key one the file takes.
func TestUsageSourcesAreRead(t *testing.T) {
	for _, s := range flagSources {
		sample, ok := flagSamples[s.flag]
		if !ok && (s.cmdline != "" || s.env != "" || s.file != "") {
			t.Errorf("no sample for --%s", s.flag)
			continue
		}
		files := fakeFS{"/sample.toml": ""}
		if s.cmdline != "" {
			files["/proc/cmdline"] = s.cmdline + "=" + sample.text
			l, err := Load(Input{Args: []string{}, PID1: true, Getenv: func(string) string { return "" }, ReadFile: files.read})
			if err != nil || len(l.IgnoredCmdline) > 0 || l.Config == Default() {
				t.Errorf("%s=%s: %v, ignored %v, config unchanged: %v", s.cmdline, sample.text, err, l.IgnoredCmdline, l.Config == Default())
			}
		}
		if s.env != "" {
			env := map[string]string{s.env: sample.text}
			l, err := Load(Input{Args: []string{}, Getenv: func(k string) string { return env[k] }, ReadFile: files.read})
			if err != nil || l.Config == Default() {
				t.Errorf("%s=%s: %v, config unchanged: %v", s.env, sample.text, err, l.Config == Default())
			}
		}
		if s.file != "" {
			c := Default()
			if err := applyFile(&c, "f.toml", []byte(s.file+" = "+sample.toml+"\n")); err != nil || c == Default() {
				t.Errorf("file key %s: %v, config unchanged: %v", s.file, err, c == Default())
			}
		}
	}
	for _, k := range cmdlineOnly {
		for _, word := range strings.Split(k.cmdline, " or ") {
			key, _, _ := strings.Cut(word, "=")
			res, err := applyCmdline(&Config{}, key+"=1")
			if len(res.ignored) > 0 {
				t.Errorf("%s: the kernel command line ignores it (%v)", key, err)
			}
		}
		c := Default()
		if err := applyFile(&c, "f.toml", []byte(k.file+" = 1\n")); err != nil && strings.Contains(err.Error(), "unknown keys") {
			t.Errorf("file key %s: %v", k.file, err)
		}
	}
}
