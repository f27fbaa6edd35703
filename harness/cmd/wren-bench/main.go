// Command wren-bench runs the Wren benchmarks (`make bench`) and compares
// two runs (`make bench-compare`).
//
//	wren-bench run [-quick N] [-only 1,4] -agent bin/wren-agent -json out.json -md out.md
//	wren-bench compare OLD.json NEW.json
//
// It also serves as its own raw-socket peers (echo-server, copy-server),
// re-executed by the run.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/wren-vm/wren/harness/bench"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = run(os.Args[2:])
	case "compare":
		err = compare(os.Args[2:])
	case "render":
		err = render(os.Args[2:])
	case "echo-server", "copy-server":
		err = bench.RunHelper(os.Args[1:])
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "wren-bench: %v\n", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: wren-bench run [flags] | wren-bench compare OLD.json NEW.json | wren-bench render REPORT.json")
}

func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	s := bench.FullSettings()
	agent := fs.String("agent", "bin/wren-agent", "agent binary")
	fs.StringVar(&s.BaselineBin, "baseline-agent", "", "an older agent binary to measure beside -agent in figures 1, 4, 5, 6 and 7")
	fs.StringVar(&s.Baseline, "baseline-name", "", "what the baseline is (for the report), e.g. a commit")
	fs.StringVar(&s.PolicyAgentBin, "policy-agent", "", "the agent built with the policy engine (make agent-policy), for figure P")
	work := fs.String("work", "", "scratch directory (default: a new temporary directory)")
	jsonOut := fs.String("json", "docs/benchmarks.json", "JSON output")
	mdOut := fs.String("md", "docs/benchmarks.md", "Markdown output")
	quick := fs.Int("quick", 1, "divide every count by this factor (quick runs)")
	only := fs.String("only", "", "comma-separated figure ids to run (default all)")
	fs.IntVar(&s.CheckCalls, "check-calls", s.CheckCalls, "Check round trips per subject (figure 4)")
	fs.IntVar(&s.LifecycleRuns, "lifecycle-runs", s.LifecycleRuns, "container runs per runtime (figure 5)")
	fs.IntVar(&s.ExecRuns, "exec-runs", s.ExecRuns, "execs per runtime (figure 6)")
	fs.Int64Var(&s.StdoutBytes, "stdout-bytes", s.StdoutBytes, "bytes of container stdout (figure 7)")
	fs.IntVar(&s.ChurnContainers, "churn-containers", s.ChurnContainers, "sleeping containers (figure 8)")
	fs.IntVar(&s.ChurnExecs, "churn-execs", s.ChurnExecs, "exec+wait cycles (figure 8)")
	fs.IntVar(&s.FootprintExecs, "footprint-execs", s.FootprintExecs, "idle exec sessions (figure 2)")
	fs.StringVar(&s.Runc, "runc", "", "runc binary (default: runc on PATH)")
	fs.StringVar(&s.Crun, "crun", "", "crun binary (default: crun on PATH)")
	fs.StringVar(&s.HostCgroupMode, "host-cgroup-mode", os.Getenv("WREN_BENCH_HOST_CGROUP_MODE"), "the host's cgroup mode, when running in a private mount namespace")
	fs.BoolVar(&s.PrivateMountNS, "private-mount-ns", os.Getenv("WREN_BENCH_PRIVATE_MOUNT_NS") == "1", "the run is in a private mount namespace without the cgroup2 mount")
	_ = fs.Parse(args) // ExitOnError: a bad flag exits
	s = s.Scale(*quick)
	if *only != "" {
		s.Only = strings.Split(*only, ",")
	}
	s.AgentBin = *agent
	if s.WorkDir = *work; s.WorkDir == "" {
		d, err := os.MkdirTemp("", "wren-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		s.WorkDir = d
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, s, log)
	if rep == nil {
		return err
	}
	if werr := rep.WriteJSON(*jsonOut); werr != nil {
		return werr
	}
	f, ferr := os.Create(*mdOut)
	if ferr != nil {
		return ferr
	}
	if werr := rep.WriteMarkdown(f); werr != nil {
		f.Close()
		return werr
	}
	if cerr := f.Close(); cerr != nil {
		return cerr
	}
	log.Info("wrote", "json", *jsonOut, "md", *mdOut, "seconds", int(rep.Seconds))
	return err
}

func compare(args []string) error {
	if len(args) != 2 || args[0] == "" || args[1] == "" {
		return fmt.Errorf("usage: wren-bench compare OLD.json NEW.json")
	}
	oldR, err := bench.ReadReport(args[0])
	if err != nil {
		return err
	}
	newR, err := bench.ReadReport(args[1])
	if err != nil {
		return err
	}
	cmp, onlyOld, onlyNew := bench.Compare(oldR, newR)
	fmt.Printf("old: %s (%s)\nnew: %s (%s)\n\n", args[0], oldR.Started.Format("2006-01-02 15:04"), args[1], newR.Started.Format("2006-01-02 15:04"))
	return bench.WriteComparison(os.Stdout, cmp, onlyOld, onlyNew)
}

// render writes the Markdown report of a run's JSON to stdout: the report
// again after a change to how it is written, without measuring again.
func render(args []string) error {
	if len(args) != 1 || args[0] == "" {
		return fmt.Errorf("usage: wren-bench render REPORT.json")
	}
	rep, err := bench.ReadReport(args[0])
	if err != nil {
		return err
	}
	return rep.WriteMarkdown(os.Stdout)
}
