// Package testagent runs the real wren-agent binary on a host unix socket
// for tests (through harness/agentproc, stopped when the test ends), and
// finds or builds the project's binaries.
package testagent

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wren-vm/wren/harness/agentproc"
	"github.com/wren-vm/wren/harness/client"
)

// repoRoot is the module root, found from this file's location.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var (
	buildMu    sync.Mutex
	builtPaths = map[string]string{}
)

// Binary returns the path of one of the project's binaries (wren-agent,
// wrenctl, ...). With WREN_BIN set (make test sets it to bin/) it uses the
// binaries `make build` made; otherwise it builds the binary once per test
// process with the Makefile.
func Binary(t testing.TB, name string) string {
	t.Helper()
	if dir := os.Getenv("WREN_BIN"); dir != "" {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("WREN_BIN=%s: %v", dir, err)
		}
		return p
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := builtPaths[name]; ok {
		return p
	}
	target := map[string]string{"wren-agent": "agent", "wren-agent-policy": "agent-policy", "wren-agent-arm64": "agent-arm64", "wrenctl": "wrenctl"}[name]
	if target == "" {
		target = "tools"
	}
	cmd := exec.Command("make", "-s", target)
	cmd.Dir = repoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make %s: %v\n%s", target, err, out)
	}
	p := filepath.Join(repoRoot(), "bin", name)
	builtPaths[name] = p
	return p
}

// Agent is a wren-agent process serving on a unix socket (see
// agentproc.Proc for its address, state root, cgroup parent and process).
type Agent struct {
	*agentproc.Proc
	log *lockedBuffer
}

// Log returns what the agent wrote to stderr so far.
func (a *Agent) Log() string { return a.log.String() }

// Options are the ways StartWith can vary an agent.
type Options struct {
	// Args are added after the defaults (a flag given twice takes its
	// last value).
	Args []string
	// NewNetNS runs the agent in a network namespace of its own (holding
	// only a loopback device, down): requests that change routes or
	// interfaces then cannot reach the machine's.
	NewNetNS bool
	// Bin is the agent binary's name (Binary): "" is wren-agent;
	// "wren-agent-policy" is the agent with the policy engine.
	Bin string
	// Shield lists absolute host directories (such as /etc) that the agent
	// sees through an overlay in a mount namespace of its own: whatever
	// the agent changes there (modes, owners, files, mounts) lands in a
	// tmpfs the namespace dies with, never on the host. Tests of requests
	// that must not touch such directories use it, so that an agent which
	// gets them wrong cannot damage the machine running the tests.
	Shield []string
}

// Start runs wren-agent with a fresh socket and state root, waits until it
// answers Health.Check, and stops it when the test ends.
func Start(t testing.TB, extraArgs ...string) *Agent {
	t.Helper()
	return StartWith(t, Options{Args: extraArgs})
}

// cgroupSeq numbers the agents of this test process.
var cgroupSeq atomic.Int64

// StartWith is Start with options.
func StartWith(t testing.TB, o Options) *Agent {
	t.Helper()
	dir := t.TempDir()
	a := &Agent{log: &lockedBuffer{}}
	bin := o.Bin
	if bin == "" {
		bin = "wren-agent"
	}
	opts := agentproc.Options{
		Bin: Binary(t, bin),
		Dir: dir,
		// Each agent gets its own cgroup parent: test packages (and the
		// test runs of other checkouts) run in parallel and reuse
		// container ids.
		CgroupParent: fmt.Sprintf("wren-test-%d-%d", os.Getpid(), cgroupSeq.Add(1)),
		LogLevel:     "debug",
		Args:         o.Args,
		Stderr:       a.log,
		NewNetNS:     o.NewNetNS,
	}
	if len(o.Shield) > 0 {
		opts.Wrapper = shielded(t, filepath.Join(dir, "shield"), o.Shield)
	}
	p, err := agentproc.Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("%v\n%s", err, a.Log())
	}
	a.Proc = p
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Log(err)
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", a.Log())
		}
	})
	return a
}

// shielded returns a command line that runs the command line appended to
// it in a private mount namespace in which each of dirs is covered by an
// overlay whose upper layer lives on a tmpfs mounted at work. The shell
// exits before that command runs when any step fails (set -e), so the
// agent never starts unshielded; exec keeps its pid.
func shielded(t testing.TB, work string, dirs []string) []string {
	t.Helper()
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("shielding %v needs unshare: %v", dirs, err)
	}
	if err := os.Mkdir(work, 0o700); err != nil {
		t.Fatal(err)
	}
	script := "set -e\nmount -t tmpfs -o mode=700 wren-shield " + shellQuote(work) + "\n"
	for i, d := range dirs {
		if !filepath.IsAbs(d) || strings.ContainsAny(d, ",:") {
			t.Fatalf("cannot shield %q: not an absolute path usable as an overlay lowerdir", d)
		}
		up, wk := filepath.Join(work, fmt.Sprintf("u%d", i)), filepath.Join(work, fmt.Sprintf("w%d", i))
		script += fmt.Sprintf("mkdir %s %s\nmount -t overlay wren-shield -o %s %s\n", shellQuote(up), shellQuote(wk),
			shellQuote("lowerdir="+d+",upperdir="+up+",workdir="+wk), shellQuote(d))
	}
	script += "exec \"$@\"\n"
	return []string{unshare, "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "wren-shield"}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// GuestPath is path as the agent sees it, through its root in its own
// mount namespace (see Options.Shield).
func (a *Agent) GuestPath(path string) string {
	return fmt.Sprintf("/proc/%d/root%s", a.Cmd.Process.Pid, filepath.Clean("/"+path))
}

// Dial connects a client to the agent, closed when the test ends.
func (a *Agent) Dial(t testing.TB) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, a.Addr)
	if err != nil {
		t.Fatalf("dial agent: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// lockedBuffer collects a process's output while tests read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
