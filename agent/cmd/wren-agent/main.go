// Command wren-agent is the in-guest agent of a VM-isolated pod. It serves
// the Kata Containers agent API over ttrpc; as PID 1 it also does the work
// of the guest's init.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wren-vm/wren/agent/config"
	"github.com/wren-vm/wren/agent/container"
	"github.com/wren-vm/wren/agent/reaper"
	"github.com/wren-vm/wren/agent/rpc"
	"github.com/wren-vm/wren/agent/sandbox"
	"github.com/wren-vm/wren/agent/server"
	"github.com/wren-vm/wren/agent/version"
)

func main() {
	// libcontainer re-executes this binary as `wren-agent init` to become a
	// container's init; that must happen before anything else runs.
	container.InitHook()
	os.Exit(run())
}

func run() int {
	loaded, err := config.Load(config.Input{Args: os.Args[1:], PID1: os.Getpid() == 1})
	if errors.Is(err, config.ErrHelp) {
		config.Usage(os.Stdout)
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "wren-agent: %v\n", err)
		config.Usage(os.Stderr)
		return 2
	}
	if loaded.ShowVersion {
		fmt.Printf("wren-agent %s (agent API %s)\n", version.Version, version.APIVersion)
		return 0
	}
	cfg := loaded.Config
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	for _, w := range loaded.IgnoredCmdline {
		log.Warn("ignoring unknown kernel command line key", "word", w)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	if err := serve(ctx, log, cfg); err != nil {
		log.Error("agent stopped", "err", err)
		return 1
	}
	log.Info("agent stopped")
	return 0
}

func serve(ctx context.Context, log *slog.Logger, cfg config.Config) error {
	tuneRuntime(ctx, log)
	srv, err := server.New(log)
	if err != nil {
		return err
	}
	rp, err := reaper.New(log)
	if err != nil {
		return err
	}
	defer rp.Close()
	sb, err := sandbox.New(sandbox.Options{
		StateRoot: cfg.StateRoot,
		PipeSize:  cfg.ContainerPipeSize,
		Reaper:    rp,
		Log:       log,
	})
	if err != nil {
		return err
	}
	rpc.Register(srv.TTRPC(), rpc.New(rpc.Options{Log: log, Config: cfg, Sandbox: sb}))
	ln, err := server.Listen(cfg.ServerAddr)
	if err != nil {
		return err
	}
	attrs := []any{"addr", cfg.ServerAddr, "version", version.Version, "pid", os.Getpid()}
	if d, err := sinceProcessStart(); err == nil {
		attrs = append(attrs, "init_ms", float64(d.Microseconds())/1000)
	}
	log.Info("listening", attrs...)
	err = srv.Serve(ctx, ln)
	if sb.Created() {
		// Not PID 1 (or PID 1 told to stop): leave no container behind.
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if derr := sb.DestroySandbox(dctx); derr != nil {
			log.Error("destroy sandbox on exit", "err", derr)
		}
	}
	return err
}
