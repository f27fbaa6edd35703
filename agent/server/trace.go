package server

import (
	"log/slog"
	"os"
	"runtime/trace"
)

// TraceEnv names a file to write a Go execution trace (runtime/trace) of
// the agent's whole serving life to; unset, nothing is traced. It is a
// debugging aid for latency work (docs/perf/rpc.md): `go tool trace` shows
// which goroutine held the agent's one P while a call waited.
const TraceEnv = "WREN_AGENT_TRACE"

// startTrace starts a trace into path ("": none) and returns what stops
// it.
func startTrace(log *slog.Logger, path string) (stop func()) {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		log.Warn("cannot trace", "path", path, "err", err)
		return func() {}
	}
	if err := trace.Start(f); err != nil {
		f.Close()
		log.Warn("cannot trace", "path", path, "err", err)
		return func() {}
	}
	log.Info("tracing the agent", "path", path)
	return func() { trace.Stop(); f.Close() }
}
