package oneproc

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// The test binary runs this package's init like the agent does, so the
// test re-runs itself with and without GOMAXPROCS in the environment and
// reports what the runtime ended up with.
func TestMain(m *testing.M) {
	if os.Getenv("ONEPROC_REPORT") == "1" {
		how := "env"
		if Applied {
			how = "applied"
		}
		fmt.Printf("%d %s", runtime.GOMAXPROCS(0), how)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func report(t *testing.T, env ...string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(withoutGOMAXPROCS(os.Environ()), append([]string{"ONEPROC_REPORT=1"}, env...)...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("re-run: %v", err)
	}
	return string(out)
}

func withoutGOMAXPROCS(env []string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, Env+"=") {
			out = append(out, e)
		}
	}
	return out
}

func TestDefaultIsOneP(t *testing.T) {
	if got := report(t); got != "1 applied" {
		t.Fatalf("without GOMAXPROCS: %q, want one P set by the package", got)
	}
}

func TestEnvironmentWins(t *testing.T) {
	if got := report(t, "GOMAXPROCS=3"); got != "3 env" {
		t.Fatalf("with GOMAXPROCS=3: %q, want the environment's 3 left alone", got)
	}
}
