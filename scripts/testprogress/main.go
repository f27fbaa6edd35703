// Command testprogress runs `go test -json ...` and prints a line per test
// package as it finishes, in the order they finish (go test's own text
// output holds each package back until those listed before it are done),
// the whole output of a package that fails, and, when nothing has finished
// for a while, which packages and tests are still running. It is what
// `make test` prints.
//
//	go run ./scripts/testprogress [--heartbeat 30s] -- go test -json ./...
//
// Its exit status is the command's.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"
)

func main() {
	heartbeat := flag.Duration("heartbeat", 30*time.Second, "say what still runs after this long without a package finishing (0: never)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: testprogress [--heartbeat D] -- go test -json [flags] [packages]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	os.Exit(run(flag.Args(), *heartbeat, os.Stdout, os.Stderr))
}

// run starts the test command and reports on its JSON events.
func run(argv []string, heartbeat time.Duration, stdout, stderr io.Writer) int {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stderr = os.Stdin, stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		fmt.Fprintf(stderr, "testprogress: %v\n", err)
		return 2
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "testprogress: %v\n", err)
		return 2
	}
	r := newReporter(stdout)
	stop := r.heartbeat(heartbeat)
	r.read(pipe)
	stop()
	waitErr := cmd.Wait()
	r.summary(time.Since(start))
	if ee, ok := waitErr.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if waitErr != nil {
		fmt.Fprintf(stderr, "testprogress: %v\n", waitErr)
		return 2
	}
	if r.failed > 0 {
		return 1
	}
	return 0
}

// event is one line of `go test -json` (cmd/test2json's TestEvent).
type event struct {
	Action     string
	Package    string
	Test       string
	Elapsed    float64
	Output     string
	ImportPath string // build-output and build-fail events
}

// pkgState is what is known of a package still running.
type pkgState struct {
	// output is what a failure prints: the package's own lines and those
	// of its failed tests, as go test without -v would show them.
	output  strings.Builder
	tests   map[string]*strings.Builder // output of tests not yet ended
	running map[string]time.Time        // top-level tests and when they started
	started time.Time
}

// chatter are the lines go test -json adds for every test (it runs the
// binary with -test.v); go test's own text output shows none of them for
// passing tests.
func chatter(line string) bool {
	for _, p := range []string{"=== RUN", "=== PAUSE", "=== CONT", "=== NAME", "--- PASS", "--- SKIP"} {
		if strings.HasPrefix(strings.TrimLeft(line, " "), p) {
			return true
		}
	}
	return false
}

// reporter turns events into lines. Its methods are safe for the
// heartbeat goroutine and the reader.
type reporter struct {
	mu                  sync.Mutex
	w                   io.Writer
	pkgs                map[string]*pkgState
	ok, failed, noTests int
	failedNames         []string
	lastLine            time.Time
	now                 func() time.Time
}

func newReporter(w io.Writer) *reporter {
	return &reporter{w: w, pkgs: map[string]*pkgState{}, now: time.Now, lastLine: time.Now()}
}

// read consumes the event stream; a line that is not an event (a build
// error printed as text, say) is printed as it is.
func (r *reporter) read(in io.Reader) {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			r.printf("%s\n", line)
			continue
		}
		r.handle(e)
	}
}

func (r *reporter) printf(format string, a ...any) {
	fmt.Fprintf(r.w, format, a...)
	r.lastLine = r.now()
}

func (r *reporter) state(pkg string) *pkgState {
	s := r.pkgs[pkg]
	if s == nil {
		s = &pkgState{tests: map[string]*strings.Builder{}, running: map[string]time.Time{}, started: r.now()}
		r.pkgs[pkg] = s
	}
	return s
}

func (r *reporter) handle(e event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch e.Action {
	case "build-output":
		r.printf("%s", e.Output)
		return
	case "build-fail", "start":
		return
	}
	if e.Package == "" {
		return
	}
	s := r.state(e.Package)
	s.record(e)
	ended := e.ended()
	topLevel := e.Test != "" && !strings.Contains(e.Test, "/")
	switch {
	case topLevel && e.Action == "run":
		s.running[e.Test] = r.now()
	case topLevel && ended:
		delete(s.running, e.Test)
	case e.Test == "" && ended:
		r.finish(e, s)
	}
}

// ended tells whether the event ends a test or package.
func (e event) ended() bool {
	return e.Action == "pass" || e.Action == "fail" || e.Action == "skip"
}

// record keeps an event's output: a test's until the test ends (a failed
// test's then joins the package's), the package's own as it comes.
func (s *pkgState) record(e event) {
	if e.Output != "" && !chatter(e.Output) {
		if e.Test == "" {
			s.output.WriteString(e.Output)
		} else {
			if s.tests[e.Test] == nil {
				s.tests[e.Test] = &strings.Builder{}
			}
			s.tests[e.Test].WriteString(e.Output)
		}
	}
	if e.Test != "" && e.ended() {
		if out := s.tests[e.Test]; out != nil && e.Action == "fail" {
			s.output.WriteString(out.String())
		}
		delete(s.tests, e.Test)
	}
}

// finish prints a package's line (and, when it failed, its output).
func (r *reporter) finish(e event, s *pkgState) {
	delete(r.pkgs, e.Package)
	switch {
	case e.Action == "fail":
		r.failed++
		r.failedNames = append(r.failedNames, e.Package)
		// Tests still running when the package failed (a timeout's
		// panic, a crash) have their output shown too.
		for _, out := range s.tests {
			r.printf("%s", out.String())
		}
		r.printf("%s", s.output.String())
		if !strings.Contains(s.output.String(), "FAIL\t"+e.Package) {
			r.printf("FAIL\t%s\t%.1fs\n", e.Package, e.Elapsed)
		}
	case strings.Contains(s.output.String(), "[no test files]"):
		r.noTests++
	default:
		r.ok++
		r.printf("ok  \t%-52s %6.1fs\n", e.Package, e.Elapsed)
	}
}

// heartbeat prints what still runs whenever nothing was printed for
// every; the returned func stops it.
func (r *reporter) heartbeat(every time.Duration) (stop func()) {
	if every <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	t := time.NewTicker(every / 3)
	go func() {
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				r.mu.Lock()
				if r.now().Sub(r.lastLine) >= every {
					r.printf("%s\n", r.stillRunning())
				}
				r.mu.Unlock()
			}
		}
	}()
	return func() { close(done) }
}

// stillRunning lists the running packages with their running top-level
// tests and for how long each has run.
func (r *reporter) stillRunning() string {
	now := r.now()
	var parts []string
	for pkg, s := range r.pkgs {
		var tests []string
		for name, since := range s.running {
			tests = append(tests, fmt.Sprintf("%s %.0fs", name, now.Sub(since).Seconds()))
		}
		sort.Strings(tests)
		p := fmt.Sprintf("%s %.0fs", pkg, now.Sub(s.started).Seconds())
		if len(tests) > 0 {
			p += " (" + strings.Join(tests, ", ") + ")"
		}
		parts = append(parts, p)
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "  ... building"
	}
	return "  ... still running: " + strings.Join(parts, "; ")
}

func (r *reporter) summary(took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	line := fmt.Sprintf("%d packages ok, %d failed, %d without tests, in %s", r.ok, r.failed, r.noTests, took.Round(time.Second))
	if r.failed > 0 {
		line += "; failed: " + strings.Join(r.failedNames, " ")
	}
	r.printf("%s\n", line)
}
