package bench

import (
	"context"
	"debug/elf"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/wren-vm/wren/agent/config"
	"github.com/wren-vm/wren/agent/rpc"
	"github.com/wren-vm/wren/agent/server"
	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/protocols/agentpb"
)

func figBinarySize(_ context.Context, r *Runner) *Figure {
	fig := &Figure{
		ID: "3", Title: "Static binary size (stripped)",
		Method: "Size of bin/wren-agent as `make agent` builds it (cgo, -tags 'netgo osusergo', -ldflags '-s -w -extldflags -static', -trimpath); checked to have no PT_INTERP and no .symtab.",
		Goal:   "≤ 12 MB", Anchor: "Kata Rust agent 23 MB stripped (kata-containers#8011); Kata Go agent 19.7 MB stripped (kata-containers/agent#740)",
	}
	fi, err := os.Stat(r.S.AgentBin)
	if err != nil {
		return failed(fig, "wren", err)
	}
	m := fig.AddValue("wren", "binary size", "MB", float64(fi.Size())/1e6)
	f, err := elf.Open(r.S.AgentBin)
	if err != nil {
		return failed(fig, "wren", err)
	}
	defer f.Close()
	static, stripped := true, f.Section(".symtab") == nil
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			static = false
		}
	}
	fig.Note("%d bytes; static: %v; stripped: %v", fi.Size(), static, stripped)
	kataRust := Metric{Subject: "kata-agent (Rust)", Summary: Summary{N: 1, Median: 23}}
	fig.AddRatio("wren / Kata Rust agent (23 MB, published)", m, kataRust, 0, 0)
	fig.Judge(m.Median <= 12)
	return fig
}

// checkLoop calls Health.Check n times and returns each round trip.
func checkLoop(ctx context.Context, h agentpb.HealthService, n int, out []time.Duration) ([]time.Duration, error) {
	req := &agentpb.CheckRequest{}
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if _, err := h.Check(ctx, req); err != nil {
			return out, fmt.Errorf("calling Check: %w", err)
		}
		out = append(out, time.Since(t0))
	}
	return out, nil
}

// echoLoop does n raw round trips of EchoSize bytes.
func echoLoop(conn net.Conn, n int, out []time.Duration) ([]time.Duration, error) {
	buf := make([]byte, EchoSize)
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if _, err := conn.Write(buf); err != nil {
			return out, err
		}
		if _, err := io.ReadFull(conn, buf); err != nil {
			return out, err
		}
		out = append(out, time.Since(t0))
	}
	return out, nil
}

// mallocs is this process's count of heap allocations so far.
func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// checkClient is one client kind figure 4 measures.
type checkClient struct {
	name string
	dial func(ctx context.Context, addr string) (agentpb.HealthService, io.Closer, error)
}

var checkClients = []checkClient{
	{"sync client", func(ctx context.Context, addr string) (agentpb.HealthService, io.Closer, error) {
		c, err := client.DialSync(ctx, addr)
		if err != nil {
			return nil, nil, err
		}
		return c.Health, c, nil
	}},
	{"stock client", func(ctx context.Context, addr string) (agentpb.HealthService, io.Closer, error) {
		c, err := client.Dial(ctx, addr)
		if err != nil {
			return nil, nil, err
		}
		return c.Health, c, nil
	}},
}

func figCheck(ctx context.Context, r *Runner) *Figure {
	fig := &Figure{
		ID: "4", Title: "Health.Check round trip over a unix socket",
		Method: fmt.Sprintf("Each agent server (wren's own ttrpc server; the same binary with %[1]s=spawn, which runs Check on "+
			"a goroutine of its own instead of inline on the connection's reader; the same binary with %[1]s=stock, i.e. "+
			"containerd/ttrpc's server; the baseline binary when given) is called by two clients, each on its own connection: harness/client.Sync, "+
			"which writes the request and reads the reply on the calling goroutine, and the stock containerd/ttrpc client, "+
			"which hands each reply from a reader goroutine to the caller. A raw echo server process (a Go program bouncing "+
			"%[2]d-byte messages, about a Check request frame) is the floor. After 1000 warm-up calls each, %[3]d calls each, "+
			"interleaved in blocks of 500 so all see the same machine noise. The goal is judged on wren with the sync client "+
			"(the agent's own share); the stock-client ratio stands beside it (what a Go shim sees). "+
			"Client allocs/op: heap allocations in the benchmark process per call. Server allocs/op: the same agent "+
			"server code (agent/server + agent/rpc) run in-process, total allocations per call minus the client's.",
			server.ImplementationEnv, EchoSize, r.S.CheckCalls),
		Goal:   "median ≤ 1.5× raw echo (wren, sync client)",
		Anchor: "ttrpc Go ≈ 32 µs/call, 35 allocs (xibz/GRPCvsTTRPC, 2019, 8 CPUs)",
	}
	var open undoStack
	defer func() { r.logCleanup("stop the Check subjects", open.run()) }()
	subjects, name, err := startCheckSubjects(ctx, r, &open)
	if err != nil {
		return failed(fig, name, err)
	}
	conn, err := startEchoFloor(r, &open)
	if err != nil {
		return failed(fig, "raw echo", err)
	}
	raw, name, err := measureChecks(ctx, subjects, conn, r.S.CheckCalls)
	if err != nil {
		return failed(fig, name, err)
	}
	clientAllocs := addCheckResults(fig, subjects, raw)
	addServerAllocs(ctx, fig, r.S.WorkDir, clientAllocs)
	return fig
}

// checkServer is one agent server figure 4 calls.
type checkServer struct {
	name string
	bin  string
	env  []string
}

// checkServers are wren's server, its two variants, and the baseline
// binaries' servers.
func checkServers(r *Runner) []checkServer {
	servers := []checkServer{
		{"wren", r.S.AgentBin, nil},
		{"wren (Check not inline)", r.S.AgentBin, []string{server.ImplementationEnv + "=spawn"}},
		{"wren (stock ttrpc server)", r.S.AgentBin, []string{server.ImplementationEnv + "=stock"}},
	}
	for _, v := range r.agents()[1:] {
		servers = append(servers, checkServer{v.subject, v.bin, nil})
	}
	return servers
}

// checkSubject is one server and client pair of figure 4.
type checkSubject struct {
	name    string
	h       agentpb.HealthService
	samples []time.Duration
	allocs  uint64
}

// startCheckSubjects starts every server, connects every client kind to
// each and warms the pair up; open gets what stops them. On failure it
// returns the subject that failed.
func startCheckSubjects(ctx context.Context, r *Runner, open *undoStack) ([]*checkSubject, string, error) {
	var subjects []*checkSubject
	for _, v := range checkServers(r) {
		agent, err := StartAgent(ctx, v.bin, r.S.WorkDir, v.env)
		if err != nil {
			return nil, v.name, err
		}
		open.push(agent.Stop)
		for _, cc := range checkClients {
			name := v.name + ", " + cc.name
			h, closer, err := cc.dial(ctx, agent.Addr)
			if err != nil {
				return nil, name, err
			}
			open.push(closer.Close)
			if _, err := checkLoop(ctx, h, 1000, nil); err != nil {
				return nil, name, err
			}
			subjects = append(subjects, &checkSubject{name: name, h: h, samples: make([]time.Duration, 0, r.S.CheckCalls)})
		}
	}
	return subjects, "", nil
}

// startEchoFloor starts the raw echo server, connects to it and warms the
// connection up; open gets what stops them.
func startEchoFloor(r *Runner, open *undoStack) (net.Conn, error) {
	echo, err := StartHelper(r.S.WorkDir, "echo-server")
	if err != nil {
		return nil, err
	}
	open.push(func() error { echo.Stop(); return nil })
	conn, err := net.Dial("unix", echo.Path)
	if err != nil {
		return nil, err
	}
	open.push(conn.Close)
	if _, err := echoLoop(conn, 1000, nil); err != nil {
		return nil, err
	}
	return conn, nil
}

// measureChecks makes calls Check calls on every subject and as many raw
// echoes, interleaved in blocks so that all see the same machine noise, and
// counts each subject's allocations in this process. It returns the echo
// round trips, or the subject that failed.
func measureChecks(ctx context.Context, subjects []*checkSubject, conn net.Conn, calls int) ([]time.Duration, string, error) {
	const block = 500
	var err error
	raw := make([]time.Duration, 0, calls)
	for done := 0; done < calls; done += block {
		n := min(block, calls-done)
		for _, sub := range subjects {
			a0 := mallocs()
			if sub.samples, err = checkLoop(ctx, sub.h, n, sub.samples); err != nil {
				return nil, sub.name, err
			}
			sub.allocs += mallocs() - a0
		}
		if raw, err = echoLoop(conn, n, raw); err != nil {
			return nil, "raw echo", err
		}
	}
	return raw, "", nil
}

// addCheckResults adds the round trips and their ratios to the raw echo,
// and the client allocations per call with wren's server, which it returns
// by client kind.
func addCheckResults(fig *Figure, subjects []*checkSubject, raw []time.Duration) map[string]float64 {
	e := fig.Add("raw echo", "round trip", "µs", Micros(raw))
	clientAllocs := map[string]float64{}
	for _, sub := range subjects {
		w := fig.Add(sub.name, "Check round trip", "µs", Micros(sub.samples))
		goal := 0.0
		if sub.name == "wren, sync client" {
			goal = 1.5
		}
		fig.AddRatio(sub.name+" / raw echo (median)", w, e, goal, 0)
		fig.AddRatio(sub.name+" / raw echo (p99)", Metric{Summary: Summary{N: 1, Median: w.P99}}, Metric{Summary: Summary{N: 1, Median: e.P99}}, 0, 0)
		for _, cc := range checkClients {
			if sub.name == "wren, "+cc.name {
				clientAllocs[cc.name] = float64(sub.allocs) / float64(len(sub.samples))
				fig.AddValue(cc.name, "client allocs/op", "allocs", clientAllocs[cc.name])
			}
		}
	}
	return clientAllocs
}

// addServerAllocs adds the server's allocations per call, wren's and the
// stock ttrpc server's, measured in-process: the total less the client's.
func addServerAllocs(ctx context.Context, fig *Figure, dir string, clientAllocs map[string]float64) {
	for _, stock := range []bool{false, true} {
		name := "wren"
		if stock {
			name = "wren (stock ttrpc server)"
		}
		cc := checkClients[0]
		total, err := inProcessAllocs(ctx, dir, 5000, stock, cc)
		if err != nil {
			fig.Skip(name+" in-process", err)
			continue
		}
		fig.AddValue(name, "server allocs/op (in-process)", "allocs", total-clientAllocs[cc.name])
	}
}

// inProcessAllocs serves the agent's Health service in this process (with
// wren's server, or the stock ttrpc server when stock is set) and returns
// the heap allocations per Check round trip, client and server.
func inProcessAllocs(ctx context.Context, dir string, n int, stock bool, cc checkClient) (float64, error) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if stock {
		os.Setenv(server.ImplementationEnv, "stock")
		defer os.Unsetenv(server.ImplementationEnv)
	}
	srv, err := server.New(server.Options{Log: log, Implementation: os.Getenv(server.ImplementationEnv), TracePath: os.Getenv(server.TraceEnv)})
	if err != nil {
		return 0, err
	}
	srv.RegisterService(agentpb.AgentServiceServiceName, agentpb.AgentServiceServiceDesc(rpc.New(rpc.Options{Log: log, Config: config.Default()})))
	srv.RegisterService(agentpb.HealthServiceName, agentpb.HealthServiceDesc(rpc.Health{}))
	d, err := os.MkdirTemp(dir, "inproc-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(d)
	addr := "unix://" + filepath.Join(d, "s.sock")
	ln, err := server.Listen(addr, nil)
	if err != nil {
		return 0, err
	}
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.Serve(sctx, ln) }() // ends when sctx does, as it should
	defer func() { stop(); wg.Wait() }()
	h, closer, err := cc.dial(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if _, err := checkLoop(ctx, h, 500, nil); err != nil {
		return 0, err
	}
	samples := make([]time.Duration, 0, n)
	a0 := mallocs()
	if _, err := checkLoop(ctx, h, n, samples); err != nil {
		return 0, err
	}
	return float64(mallocs()-a0) / float64(n), nil
}
