// Package kconfig reads Linux Kconfig fragments and .config files and
// checks a .config against the fragments: every requested option must be
// present with the requested value. It replaces Kata's grep over
// merge_config.sh output with a parser, so a typo, a dependency that
// kconfig silently dropped, or a value that differs is reported by name.
package kconfig

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Setting is one requested option.
type Setting struct {
	Name  string // without the CONFIG_ prefix
	Value string // "y", "m", "n" (for "is not set") or the literal value
	File  string
	Line  int
}

func (s Setting) String() string {
	return fmt.Sprintf("CONFIG_%s=%s (%s:%d)", s.Name, s.Value, s.File, s.Line)
}

var (
	setLine   = regexp.MustCompile(`^CONFIG_([A-Za-z0-9_]+)=(.*)$`)
	unsetLine = regexp.MustCompile(`^# CONFIG_([A-Za-z0-9_]+) is not set$`)
)

// parse reads CONFIG_X=v and "# CONFIG_X is not set" lines. Other comments
// and blank lines are skipped; with strict, any other line is an error.
func parse(name string, r io.Reader, strict bool) ([]Setting, error) {
	var out []Setting
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if m := setLine.FindStringSubmatch(line); m != nil {
			out = append(out, Setting{Name: m[1], Value: m[2], File: name, Line: n})
			continue
		}
		if m := unsetLine.FindStringSubmatch(line); m != nil {
			out = append(out, Setting{Name: m[1], Value: "n", File: name, Line: n})
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strict {
			return nil, fmt.Errorf("%s:%d: not a config line: %q", name, n, line)
		}
	}
	return out, sc.Err()
}

// ParseFragment parses a fragment; anything but options, comments and
// blank lines is an error.
func ParseFragment(name string, r io.Reader) ([]Setting, error) { return parse(name, r, true) }

// Config is a .config: option name → value. Options not present are "n".
type Config map[string]string

// Get returns the option's value, "n" when absent.
func (c Config) Get(name string) string {
	if v, ok := c[name]; ok {
		return v
	}
	return "n"
}

// ParseConfig parses a .config file.
func ParseConfig(r io.Reader) (Config, error) {
	settings, err := parse(".config", r, false)
	if err != nil {
		return nil, err
	}
	c := Config{}
	for _, s := range settings {
		c[s.Name] = s.Value
	}
	return c, nil
}

// ReadConfig reads a .config file from disk.
func ReadConfig(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseConfig(f)
}

// Arches with fragment directories.
var Arches = []string{"x86_64", "arm64"}

// LoadFragments reads dir/common/*.conf and dir/<arch>/*.conf in name
// order. An option requested twice with different values is an error
// naming both places; the same value twice is allowed.
func LoadFragments(dir, arch string) ([]Setting, error) {
	known := false
	for _, a := range Arches {
		known = known || a == arch
	}
	if !known {
		return nil, fmt.Errorf("unknown arch %q (have %v)", arch, Arches)
	}
	var files []string
	for _, sub := range []string{"common", arch} {
		m, err := filepath.Glob(filepath.Join(dir, sub, "*.conf"))
		if err != nil {
			return nil, err
		}
		sort.Strings(m)
		files = append(files, m...)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no fragments (*.conf) under %s/common or %s/%s", dir, dir, arch)
	}
	var all []Setting
	seen := map[string]Setting{}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		rel, _ := filepath.Rel(dir, f)
		settings, err := ParseFragment(rel, fh)
		fh.Close()
		if err != nil {
			return nil, err
		}
		for _, s := range settings {
			if old, ok := seen[s.Name]; ok {
				if old.Value != s.Value {
					return nil, fmt.Errorf("CONFIG_%s requested as %s at %s:%d and as %s at %s:%d", s.Name, old.Value, old.File, old.Line, s.Value, s.File, s.Line)
				}
				continue
			}
			seen[s.Name] = s
			all = append(all, s)
		}
	}
	return all, nil
}

// Render writes settings as .config lines, usable as KCONFIG_ALLCONFIG.
func Render(w io.Writer, settings []Setting) error {
	for _, s := range settings {
		var err error
		if s.Value == "n" {
			_, err = fmt.Fprintf(w, "# CONFIG_%s is not set\n", s.Name)
		} else {
			_, err = fmt.Fprintf(w, "CONFIG_%s=%s\n", s.Name, s.Value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Kinds of Finding.
const (
	Absent     = "absent"      // requested on, not in the .config at all
	ModuleOnly = "module only" // requested built in (y), configured as a module
	Differs    = "differs"     // any other value mismatch
)

// Finding is one requested option the .config does not satisfy.
type Finding struct {
	Want Setting
	Have string
	Kind string
}

func (f Finding) String() string {
	return fmt.Sprintf("CONFIG_%s: want %s, have %s (%s) [%s:%d]", f.Want.Name, f.Want.Value, f.Have, f.Kind, f.Want.File, f.Want.Line)
}

// Check compares a .config with the requested settings.
func Check(want []Setting, have Config) []Finding {
	var out []Finding
	for _, s := range want {
		v, present := have[s.Name]
		if !present {
			v = "n"
		}
		if v == s.Value {
			continue
		}
		f := Finding{Want: s, Have: v, Kind: Differs}
		switch {
		case !present && s.Value != "n":
			f.Kind = Absent
		case s.Value == "y" && v == "m":
			f.Kind = ModuleOnly
		}
		out = append(out, f)
	}
	return out
}
