package scripts

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// writeModule lays out a module whose main imports n packages; each holds
// a constant unique to this run, so that every one is compiled afresh.
func writeModule(t *testing.T, n int, broken bool) string {
	t.Helper()
	dir := t.TempDir()
	b := make([]byte, 8)
	rand.Read(b)
	nonce := hex.EncodeToString(b)
	files := map[string]string{"go.mod": "module example.com/demo\n\ngo 1.22\n"}
	var imports, uses strings.Builder
	for i := range n {
		files[fmt.Sprintf("p%d/p.go", i)] = fmt.Sprintf("package p%d\n\nconst Nonce = %q\n", i, nonce)
		fmt.Fprintf(&imports, "\t\"example.com/demo/p%d\"\n", i)
		fmt.Fprintf(&uses, "\t_ = p%d.Nonce\n", i)
	}
	if broken {
		files["p0/p.go"] += "\nvar Broken int = \"not an int\"\n"
	}
	files["main.go"] = "package main\n\nimport (\n" + imports.String() + ")\n\nfunc main() {\n" + uses.String() + "}\n"
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func gobuild(t *testing.T, module string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot(t), "scripts", "gobuild.sh"), "demo", "-o", filepath.Join(t.TempDir(), "demo"), ".")
	cmd.Dir = module
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// A build that compiles many packages says so as it goes; a warm one is
// silent.
func TestGobuildShowsProgress(t *testing.T) {
	module := writeModule(t, 45, false)
	out, err := gobuild(t, module)
	if err != nil {
		t.Fatalf("gobuild.sh: %v\n%s", err, out)
	}
	if !strings.Contains(out, "  demo: 40 packages compiled\n") || !strings.Contains(out, "packages compiled, linked\n") {
		t.Errorf("no progress lines:\n%s", out)
	}
	if strings.Contains(out, "example.com/demo/p") {
		t.Errorf("package names passed through:\n%s", out)
	}
	if out, err := gobuild(t, module); err != nil || strings.Contains(out, "packages compiled") {
		t.Errorf("warm build: %v, output %q", err, out)
	}
}

// Compiler errors pass through and fail the build.
func TestGobuildPassesErrorsThrough(t *testing.T) {
	out, err := gobuild(t, writeModule(t, 3, true))
	if err == nil {
		t.Fatalf("a broken build succeeded:\n%s", out)
	}
	if !strings.Contains(out, "p0/p.go") || !strings.Contains(out, "cannot use") {
		t.Errorf("the compiler's error is missing:\n%s", out)
	}
}
