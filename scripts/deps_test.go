// Package scripts holds the tests of the shell entry points behind the make
// targets.
package scripts

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// repoRoot is the module root (tests run in their package's directory).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// goOnlyTargets are the documented make targets that need nothing but Go
// and so install nothing.
var goOnlyTargets = map[string]bool{"lint": true, "bench-compare": true, "kernel-config-check": true}

// documentedTargets are the `make TARGET` forms the README names.
func documentedTargets(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, m := range regexp.MustCompile("`make ([a-z][a-z0-9-]*)").FindAllStringSubmatch(string(b), -1) {
		set[m[1]] = true
	}
	// The two commands of "Two commands" sit in a code block.
	set["run"], set["test"] = true, true
	var out []string
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Every documented target that needs more than Go installs what it needs
// before anything else: `make -n` shows install-deps.sh among its commands.
func TestDocumentedTargetsInstallTheirPackages(t *testing.T) {
	targets := documentedTargets(t)
	if len(targets) < 8 {
		t.Fatalf("found only %v in README.md", targets)
	}
	for _, target := range targets {
		if goOnlyTargets[target] {
			continue
		}
		cmd := exec.Command("make", "-n", "--no-print-directory", target)
		cmd.Dir = repoRoot(t)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("make -n %s: %v\n%s", target, err, out)
			continue
		}
		want := "scripts/install-deps.sh base"
		switch target {
		case "kernel":
			want = "scripts/install-deps.sh kernel arm64"
		case "agent-arm64":
			want = "scripts/install-deps.sh arm64"
		}
		first := strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0]
		if !strings.Contains(first, want) {
			t.Errorf("make %s does not begin with %q; its first command is %q", target, want, first)
		}
	}
}

// installDeps runs the script with env added to a minimal environment.
func installDeps(t *testing.T, path string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("/bin/bash", append([]string{filepath.Join(repoRoot(t), "scripts", "install-deps.sh")}, args...)...)
	cmd.Env = []string{"PATH=" + path, "LANG=C"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), code
}

// What `make test` needs is all here (make test runs install-deps first),
// and a run with nothing missing is silent and calls no apt-get.
func TestInstallDepsNothingMissingHere(t *testing.T) {
	if out, code := installDeps(t, os.Getenv("PATH"), "--check"); code != 0 || out != "" {
		t.Fatalf("install-deps.sh --check: exit %d, missing:\n%s(make deps installs them)", code, out)
	}
	shims := t.TempDir()
	writeScript(t, filepath.Join(shims, "apt-get"), "echo apt-get was called: \"$@\"; exit 1")
	if out, code := installDeps(t, shims+":"+os.Getenv("PATH")); code != 0 || out != "" {
		t.Errorf("install-deps.sh with nothing missing: exit %d, output %q", code, out)
	}
}

// On a bare PATH every package found by a command is missing: --check lists
// them and exits 1; a real run (as root, apt-get a stand-in) installs them
// in one apt-get call and prints a line per package set up.
func TestInstallDepsInstallsWhatIsMissing(t *testing.T) {
	shims := t.TempDir()
	for _, name := range []string{"sed"} {
		p, err := exec.LookPath(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p, filepath.Join(shims, name)); err != nil {
			t.Fatal(err)
		}
	}
	out, code := installDeps(t, shims, "--check", "kernel")
	for _, pkg := range []string{"flex", "bison", "bc", "perl", "gcc", "make", "xz-utils", "dpkg", "apt"} {
		if !regexp.MustCompile(`(?m)^` + pkg + `$`).MatchString(out) {
			t.Errorf("--check kernel on a bare PATH does not list %s:\n%s", pkg, out)
		}
	}
	if code != 1 {
		t.Errorf("--check with packages missing: exit %d, want 1", code)
	}

	log := filepath.Join(t.TempDir(), "apt.log")
	writeScript(t, filepath.Join(shims, "id"), "echo 0")
	writeScript(t, filepath.Join(shims, "apt-get"), `echo "$@" >> `+log+`
[ "$1" = install ] || exit 0
for p in "$@"; do case $p in -*|install) ;; *) echo "Setting up $p (1.0) ..." ;; esac; done`)
	out, code = installDeps(t, shims, "base", "kernel")
	if code != 0 {
		t.Fatalf("install-deps.sh: exit %d\n%s", code, out)
	}
	calls, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(calls)), "\n")
	if len(lines) != 2 || lines[0] != "update -qq" || !strings.HasPrefix(lines[1], "install -y --no-install-recommends ") {
		t.Fatalf("apt-get calls:\n%s", calls)
	}
	installed := strings.Fields(strings.TrimPrefix(lines[1], "install -y --no-install-recommends "))
	seen := map[string]bool{}
	for _, p := range installed {
		if seen[p] {
			t.Errorf("%s asked for twice", p)
		}
		seen[p] = true
		if !strings.Contains(out, "set up "+p+"\n") {
			t.Errorf("no progress line for %s:\n%s", p, out)
		}
	}
	for _, p := range []string{"protobuf-compiler", "qemu-system-x86", "flex", "bison"} {
		if !seen[p] {
			t.Errorf("%s not installed; apt-get install got %v", p, installed)
		}
	}
	if seen["apt"] {
		t.Error("apt installed although apt-get is on PATH")
	}
}

func writeScript(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}
