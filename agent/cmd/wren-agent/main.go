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

	"github.com/wren-vm/wren/agent/config"
	"github.com/wren-vm/wren/agent/initd"
	"github.com/wren-vm/wren/agent/rpc"
	"github.com/wren-vm/wren/agent/server"
	"github.com/wren-vm/wren/agent/version"
)

func main() {
	pid1 := initd.IsPID1()
	if pid1 {
		// As init, nothing may end this process: a panic powers off.
		defer initd.Recover(slog.New(slog.NewJSONHandler(os.Stderr, nil)), "main")
		// /proc must exist before the configuration reads /proc/cmdline.
		if err := initd.EarlyMounts(""); err != nil {
			fmt.Fprintf(os.Stderr, "wren-agent: early mounts: %v\n", err)
		}
	}
	code, reason := run(pid1)
	if pid1 {
		_ = initd.PowerOff(slog.New(slog.NewJSONHandler(os.Stderr, nil)), reason)
	}
	os.Exit(code)
}

func run(pid1 bool) (int, string) {
	loaded, err := config.Load(config.Input{Args: os.Args[1:], PID1: pid1})
	if errors.Is(err, config.ErrHelp) {
		config.Usage(os.Stdout)
		return 0, "help requested"
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "wren-agent: %v\n", err)
		if !pid1 {
			config.Usage(os.Stderr)
		}
		return 2, "configuration: " + err.Error()
	}
	if loaded.ShowVersion {
		fmt.Printf("wren-agent %s (agent API %s)\n", version.Version, version.APIVersion)
		return 0, "version requested"
	}
	cfg := loaded.Config

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	for _, w := range loaded.IgnoredCmdline {
		log.Warn("ignoring unknown kernel command line key", "word", w)
	}
	if pid1 {
		cmdline, _ := os.ReadFile("/proc/cmdline")
		// Step failures are logged by Setup; the agent still serves.
		_ = initd.Setup(ctx, log, initd.Config{CgroupV1: initd.CgroupV1Requested(config.SplitCmdline(string(cmdline)))})
	}
	// The log stream needs the vsock modules Setup loads; until then the
	// log goes to the console.
	if cfg.LogVport != 0 {
		sink, err := initd.NewLogSink(ctx, cfg.LogVport)
		if err != nil {
			log.Error("log stream unavailable; logging to the console", "vport", cfg.LogVport, "err", err)
		} else {
			defer sink.Close()
			log = slog.New(sink.Handler(cfg.LogLevel))
		}
	}
	if pid1 {
		// TODO(reaper): start agent/reaper here once it lands, and pass its
		// Run to the debug console so a single owner calls wait4.
		if cfg.DebugConsole {
			dc := &initd.DebugConsole{Port: cfg.DebugConsoleVport, Log: log}
			if err := dc.Start(ctx); err != nil {
				log.Error("debug console", "err", err)
			}
		}
	}

	if err := serve(ctx, log, cfg); err != nil {
		log.Error("agent stopped", "err", err)
		return 1, "agent stopped: " + err.Error()
	}
	log.Info("agent stopped")
	if ctx.Err() != nil {
		return 0, "signal received"
	}
	return 0, "agent stopped"
}

func serve(ctx context.Context, log *slog.Logger, cfg config.Config) error {
	srv, err := server.New(log)
	if err != nil {
		return err
	}
	rpc.Register(srv.TTRPC(), rpc.New(rpc.Options{Log: log, Config: cfg}))
	ln, err := server.Listen(cfg.ServerAddr)
	if err != nil {
		return err
	}
	attrs := []any{"addr", cfg.ServerAddr, "version", version.Version, "pid", os.Getpid()}
	if d, err := sinceProcessStart(); err == nil {
		attrs = append(attrs, "init_ms", float64(d.Microseconds())/1000)
	}
	log.Info("listening", attrs...)
	return srv.Serve(ctx, ln)
}
