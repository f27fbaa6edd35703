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

	"github.com/wren-vm/wren/agent/assemble"
	"github.com/wren-vm/wren/agent/config"
	"github.com/wren-vm/wren/agent/container"
	"github.com/wren-vm/wren/agent/hostvsock"
	"github.com/wren-vm/wren/agent/initd"
	"github.com/wren-vm/wren/agent/memagent"
	"github.com/wren-vm/wren/agent/reaper"
	"github.com/wren-vm/wren/agent/rpc"
	"github.com/wren-vm/wren/agent/server"
	"github.com/wren-vm/wren/agent/uevent"
	"github.com/wren-vm/wren/agent/version"
	"github.com/wren-vm/wren/agent/vmfork"

	// Keeps the main thread for the main goroutine, so no goroutine that
	// enters a container's namespaces can strand it there (see its doc).
	_ "github.com/wren-vm/wren/agent/cmd/wren-agent/internal/mainthread"
	// First of the agent's packages to initialize: it sets the one-P
	// default before the heavy package initializers run (see its doc).
	_ "github.com/wren-vm/wren/agent/cmd/wren-agent/internal/oneproc"
)

func main() {
	// libcontainer re-executes this binary as `wren-agent init` to become a
	// container's init; that must happen before anything else runs.
	container.InitHook()
	// The mem-agent runs each compaction in a child it can kill, this
	// binary started as `wren-agent memagent-compact FILE`.
	memagent.CompactHook()
	pid1 := initd.IsPID1()
	if !pid1 {
		os.Exit(run(false).code)
	}
	// As init, this process must never end: a panic, an error or a signal
	// all end in a logged, clean power-off (returning would panic the kernel).
	mainStart := initd.Uptime()
	console := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	defer initd.Recover(console, "main")
	// /proc must be mounted before the configuration reads /proc/cmdline.
	if err := initd.EarlyMounts(""); err != nil {
		console.Error("early mounts", "err", err)
	}
	// The kernel's share of the boot: its uptime when /init began.
	console.Info("guest init started", "uptime_ms", mainStart.Milliseconds())
	_ = initd.PowerOff(console, run(true).reason)
}

// exit is how run ended: the process exit code, and the reason that PID 1
// logs when it powers off.
type exit struct {
	code   int
	reason string
}

func run(pid1 bool) exit {
	loaded, err := config.Load(config.Input{Args: os.Args[1:], PID1: pid1})
	if errors.Is(err, config.ErrHelp) {
		config.Usage(os.Stdout)
		return exit{0, "help requested"}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "wren-agent: %v\n", err)
		if !pid1 {
			config.Usage(os.Stderr)
		}
		return exit{2, "configuration: " + err.Error()}
	}
	if loaded.ShowVersion {
		fmt.Printf("wren-agent %s (agent API %s)\n", version.Version, version.APIVersion)
		return exit{0, "version requested"}
	}
	cfg := loaded.Config

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	var sink *initd.LogSink
	if cfg.LogVport != 0 {
		// agent.log_vport: the JSON log goes to the host connected on that
		// port. It is buffered until the vsock module is loaded.
		sink = initd.NewLogBuffer()
		defer sink.Close()
		log = slog.New(sink.Handler(cfg.LogLevel))
	}
	container.RouteLogrus(log) // libcontainer's logrus lines join the JSON log
	for _, w := range loaded.IgnoredCmdline {
		log.Warn("ignoring unknown kernel command line key", "word", w)
	}
	if pid1 {
		initGuest(ctx, log, cfg)
		// A guest restored from a snapshot or a VM template learns it from
		// the kernel log and steps its stale clock to the RTC.
		go func() {
			if err := (&vmfork.Watcher{Log: log}).Run(ctx); err != nil {
				log.Warn("VM fork watcher stopped", "err", err)
			}
		}()
	}
	if sink != nil {
		if err := sink.ListenVsock(ctx, cfg.LogVport); err != nil {
			sink.Fallback(os.Stderr)
			log.Error("log stream unavailable; logging to the console", "err", err)
		}
	}

	// As PID 1, DestroySandbox ends the agent and so powers the VM off, as
	// the shim expects of a sandbox VM it tears down.
	ctx, destroyed := context.WithCancelCause(ctx)
	if !pid1 {
		destroyed = nil
	}
	if err := serve(ctx, log, cfg, destroyed); err != nil {
		log.Error("agent stopped", "err", err)
		return exit{1, "agent stopped: " + err.Error()}
	}
	log.Info("agent stopped")
	if cause := context.Cause(ctx); errors.Is(cause, errSandboxDestroyed) {
		return exit{0, cause.Error()}
	}
	if ctx.Err() != nil {
		return exit{0, "signal received"}
	}
	return exit{0, "agent stopped"}
}

// initGuest does the PID 1 work before the agent serves. Failed steps are
// logged by initd and do not stop the agent: a guest missing, say, one
// cgroup controller is still worth serving.
func initGuest(ctx context.Context, log *slog.Logger, cfg config.Config) {
	cmdline, _ := os.ReadFile("/proc/cmdline")
	_ = initd.Setup(ctx, log, initd.Config{CgroupV1: initd.CgroupV1Requested(config.SplitCmdline(string(cmdline)))})
	if m, err := container.RootMount(); err != nil {
		log.Warn("guest root unknown", "err", err)
	} else {
		log.Info("guest root", "fstype", m.FSType, "source", m.Source, "options", m.Options, "super_options", m.VFSOptions)
	}
	// Modules are loaded now, before serve starts the uevent listener and
	// anything waits for a device. The debug console waits for its own
	// shells (exec.Cmd), which agent/reaper leaves alone; orphans are
	// reaped by the reaper that serve starts.
	if cfg.DebugConsole {
		dc := &initd.DebugConsole{Port: cfg.DebugConsoleVport, Log: log}
		if err := dc.Start(ctx); err != nil {
			log.Error("debug console", "err", err)
		}
	}
}

func serve(ctx context.Context, log *slog.Logger, cfg config.Config, destroyed context.CancelCauseFunc) error {
	tuneRuntime(ctx, log)
	// Each step of the way to the first answer is on every pod's start.
	mark := time.Now()
	startStep := func(name string) {
		log.Debug("start step done", "step", name, "ms", float64(time.Since(mark).Microseconds())/1000)
		mark = time.Now()
	}
	// Devices announced before anyone listens are recorded from sysfs, but
	// the listener must still start before the first device wait.
	watcher, err := uevent.Listen(ctx, log, uevent.Options{HotplugTimeout: cfg.HotplugTimeout})
	if err != nil {
		log.Warn("uevent listener unavailable; device waits will fail", "err", err)
	}
	startStep("uevent")
	rp, err := reaper.New(log)
	if err != nil {
		return err
	}
	defer rp.Close()
	opts := assemble.Options{Log: log, Config: cfg, Reaper: rp, Watcher: watcher, Context: ctx}
	if cfg.PassfdListenerPort != 0 {
		// Kata's passfd IO; like every vsock port of the agent's, for the
		// host alone. Without it the agent serves on, with pipes.
		ln, err := hostvsock.Listen(hostvsock.AnyCID, cfg.PassfdListenerPort, log)
		if err != nil {
			log.Error("passfd listener unavailable; process streams stay pipes", "port", cfg.PassfdListenerPort, "err", err)
		} else {
			opts.PassfdListener = ln
		}
	}
	if destroyed != nil {
		opts.AfterDestroy = func() { destroyed(errSandboxDestroyed) }
	}
	startStep("reaper and passfd listener")
	agent, err := assemble.New(opts)
	if err != nil {
		return err
	}
	startStep("assemble")
	sb := agent.Sandbox
	srv, err := server.New(server.Options{Log: log, Implementation: os.Getenv(server.ImplementationEnv), TracePath: os.Getenv(server.TraceEnv)})
	if err != nil {
		return err
	}
	rpc.Register(srv, agent.API)
	startStep("server")
	ln, err := server.Listen(cfg.ServerAddr, log)
	if err != nil {
		return err
	}
	startStep("listen")
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
