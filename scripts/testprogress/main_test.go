package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A module with a slow package listed first, a fast one, a failing one
// and one without tests, tested for real with go test -json.
func writeModule(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"go.mod":          "module example.com/m\n\ngo 1.22\n",
		"aslow/a.go":      "package aslow\n",
		"aslow/a_test.go": "package aslow\n\nimport (\n\t\"os\"\n\t\"testing\"\n\t\"time\"\n)\n\nfunc TestSlow(t *testing.T) {\n\tfor start := time.Now(); time.Since(start) < time.Minute; time.Sleep(20 * time.Millisecond) {\n\t\tif _, err := os.Stat(os.Getenv(\"RELEASE\")); err == nil {\n\t\t\treturn\n\t\t}\n\t}\n\tt.Fatal(\"bfast never ran\")\n}\n",
		"bfast/b.go":      "package bfast\n",
		"bfast/b_test.go": "package bfast\n\nimport \"testing\"\n\nfunc TestFast(t *testing.T) {}\n",
		"cfail/c.go":      "package cfail\n",
		"cfail/c_test.go": "package cfail\n\nimport \"testing\"\n\nfunc TestBroken(t *testing.T) {\n\tt.Log(\"the detail that explains it\")\n\tt.Fatal(\"broken on purpose\")\n}\n",
		"dnone/d.go":      "package dnone\n",
	}
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

// The fast package is reported while the slow one (listed before it)
// still runs, which go test's text output cannot do: the slow one waits
// until the report of the fast one is written (releaseOn creates the file
// it waits for), so the order does not depend on timing. The failing
// package's output is printed whole; the exit status is go test's.
func TestReportsPackagesAsTheyFinish(t *testing.T) {
	module := writeModule(t)
	t.Setenv("RELEASE", filepath.Join(t.TempDir(), "release"))
	var out, errb bytes.Buffer
	t.Chdir(module)
	report := &releaseOn{w: &out, marker: "example.com/m/bfast", release: os.Getenv("RELEASE")}
	// Separate buffers: exec.Cmd copies stderr into its writer from a
	// goroutine of its own, which a shared bytes.Buffer does not survive.
	code := run([]string{"go", "test", "-json", "-count=1", "-p=4", "./..."}, 0, report, &errb)
	got := out.String()
	if code != 1 {
		t.Errorf("exit %d, want go test's 1\n%s", code, got)
	}
	fast, slow := strings.Index(got, "example.com/m/bfast"), strings.Index(got, "example.com/m/aslow")
	if fast < 0 || slow < 0 || fast > slow {
		t.Errorf("bfast should be reported before aslow, which waited for it:\n%s", got)
	}
	for _, want := range []string{"the detail that explains it", "broken on purpose", "FAIL\texample.com/m/cfail",
		"2 packages ok, 1 failed, 1 without tests", "failed: example.com/m/cfail"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "=== RUN") || strings.Contains(got, "TestFast") {
		t.Errorf("passing tests' chatter in the output:\n%s", got)
	}
	if strings.Contains(got, `"Action"`) {
		t.Errorf("raw JSON in the output:\n%s", got)
	}
}

// The heartbeat names the packages and tests still running.
func TestStillRunning(t *testing.T) {
	var out bytes.Buffer
	r := newReporter(&out)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	r.now = func() time.Time { return now }
	for _, line := range []string{
		`{"Action":"start","Package":"x/e2e"}`,
		`{"Action":"run","Package":"x/e2e","Test":"TestPodVM"}`,
		`{"Action":"run","Package":"x/e2e","Test":"TestPodVM/Sub"}`,
		`{"Action":"run","Package":"x/fast","Test":"TestA"}`,
		`{"Action":"pass","Package":"x/fast","Test":"TestA","Elapsed":0.1}`,
		`{"Action":"pass","Package":"x/fast","Elapsed":0.2}`,
		`not json: a build error, say`,
		`{"ImportPath":"x/broken","Action":"build-output","Output":"x/broken/a.go:3:1: syntax error\n"}`,
		`{"ImportPath":"x/broken","Action":"build-fail"}`,
	} {
		r.read(strings.NewReader(line + "\n"))
	}
	now = t0.Add(52 * time.Second)
	if got, want := r.stillRunning(), "  ... still running: x/e2e 52s (TestPodVM 52s)"; got != want {
		t.Errorf("stillRunning = %q, want %q", got, want)
	}
	if !strings.Contains(out.String(), "ok  \tx/fast") || !strings.Contains(out.String(), "not json: a build error, say\n") ||
		!strings.Contains(out.String(), "x/broken/a.go:3:1: syntax error\n") {
		t.Errorf("output:\n%s", out.String())
	}
}

// A command that cannot start is an error of its own.
func TestCommandMissing(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{filepath.Join(t.TempDir(), "nope")}, 0, &out, &out); code != 2 {
		t.Errorf("exit %d, want 2: %s", code, out.String())
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatal("go not on PATH")
	}
}

// releaseOn passes what it is given to w, and creates release once marker
// was written.
type releaseOn struct {
	w        *bytes.Buffer
	marker   string
	release  string
	released bool
}

func (r *releaseOn) Write(p []byte) (int, error) {
	n, err := r.w.Write(p)
	if !r.released && strings.Contains(r.w.String(), r.marker) {
		r.released = true
		if werr := os.WriteFile(r.release, nil, 0o644); werr != nil {
			return n, werr
		}
	}
	return n, err
}
