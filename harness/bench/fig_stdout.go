package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// stdoutBudget bounds all streams of figure 7 together so that `make bench`
// stays within 15 minutes when the agent is slow; the figure notes a cut
// short.
const stdoutBudget = 4 * time.Minute

// stdoutSource is one stream of figure 7, set up and waiting: the writer
// blocks on a full pipe or socket until the stream is read.
type stdoutSource struct {
	subject string
	// read reads about n bytes and returns how many it read; 0 with a
	// nil error is EOF.
	read  func(ctx context.Context, n int64) (int64, error)
	close func() error
	// cpu reports the serving process's CPU time so far (nil for raw).
	cpu func() (time.Duration, bool)
	// whole makes the first round read the whole stream: a raw
	// socket moves a segment in a few milliseconds, so segments read in
	// turn with the slow agents would measure mostly how fast the idle
	// writer wakes up.
	whole bool

	total     int64
	elapsed   time.Duration
	cpuUsed   time.Duration
	clientCPU time.Duration
	rates     []float64 // MB/s per segment
	err       error
}

func figStdout(ctx context.Context, r *Runner) *Figure {
	total := r.S.StdoutBytes >> 20 << 20
	segment := max(total/16, 4<<20)
	fig := &Figure{
		ID: "7", Title: "Container stdout throughput",
		Method: fmt.Sprintf("A container runs busybox `dd if=/dev/zero bs=1M count=%d` (%d MiB to its stdout pipe); the "+
			"benchmark reads it with ReadStdout calls of a fixed Len (Kata's shim uses 32 KiB) until EOF, one connection "+
			"per agent. Raw peer: a separate process writes the same bytes in 1 MiB writes to a unix socket and the "+
			"benchmark reads them with the same buffer size. All streams are set up first (each writer blocks on its full "+
			"pipe or socket) and then the agents' streams are read in turn, %d MiB from each, round-robin with a rotating "+
			"start, so that every agent sees the same machine load (the raw streams, which take milliseconds, are read "+
			"whole in the first round); rate per segment (median and spread); overall rate and the CPU time per MiB of the "+
			"agent and of the reading client in the notes. The agents run with WREN_AGENT_IDLE_RELEASE=off (between "+
			"segments an agent idles, and a release would make its next segment re-fault its heap). Pipe sizes are each agent's default unless the subject names "+
			"one (the kernel's 64 KiB until the agent got its own default, 256 KiB). Clients: rows that name none use the stock "+
			"containerd/ttrpc client (as a Go shim does, one connection shared with the setup calls); \"ReadStream client\" is "+
			"harness/client.Sync.ReadStream on a connection of its own, which reads each reply into a buffer it keeps and "+
			"decodes it by hand (no allocation per reply); \"sync client, proto decode\" is the same synchronous client "+
			"decoding each reply with proto.Unmarshal (a fresh frame buffer and a fresh copy of the data per reply). The goal is "+
			"judged on wren with the ReadStream client (what the agent costs when the reader costs little); the "+
			"stock-client ratio stands beside it.",
			total>>20, total>>20, segment>>20),
		Goal:   "≥ 0.5× raw with 1 MiB reads (wren, ReadStream client)",
		Anchor: "RPC-wrapped stdio over vsock 50–100 MB/s (CubeSandbox#728, no method); spike.md: 64 KiB ttrpc Put 145–201 MB/s here",
	}
	sources := setUpStdoutSources(ctx, r, fig, total)
	defer closeStdoutSources(fig, sources)
	budget := r.budget(stdoutBudget, 5*time.Minute, 20*time.Second)
	readStdoutRounds(ctx, sources, segment, total, time.Now().Add(budget))
	results := addStdoutResults(fig, sources, total, budget)
	addStdoutRatios(fig, results)
	return fig
}

// setUpStdoutSources sets up every stream of the figure, each writer blocked
// until it is read; a stream that cannot be set up is skipped in fig.
func setUpStdoutSources(ctx context.Context, r *Runner, fig *Figure, total int64) []*stdoutSource {
	var sources []*stdoutSource
	add := func(subject string, setup func() (*stdoutSource, error)) {
		if ctx.Err() != nil {
			return
		}
		s, err := setup()
		if err != nil {
			fig.Skip(subject, err)
			return
		}
		s.subject = subject
		sources = append(sources, s)
	}
	add("raw socket, 32 KiB reads", func() (*stdoutSource, error) { return rawStdoutSource(r, total, 32<<10) })
	add("raw socket, 1 MiB reads", func() (*stdoutSource, error) { return rawStdoutSource(r, total, 1<<20) })
	for _, a := range r.agents() {
		add(a.subject+", 32 KiB reads", func() (*stdoutSource, error) {
			return wrenStdoutSource(ctx, r, a.bin, nil, total, 32<<10, stockReader)
		})
		add(a.subject+", 1 MiB reads", func() (*stdoutSource, error) {
			return wrenStdoutSource(ctx, r, a.bin, nil, total, 1<<20, stockReader)
		})
		add(a.subject+", 1 MiB reads, ReadStream client", func() (*stdoutSource, error) {
			return wrenStdoutSource(ctx, r, a.bin, nil, total, 1<<20, streamReader)
		})
	}
	// The synchronous client decoding replies into messages, as Call
	// does: what the ReadStream client's kept buffer and hand decoding
	// buy, apart from the stock client's reader goroutine.
	add("wren, 1 MiB reads, sync client, proto decode", func() (*stdoutSource, error) {
		return wrenStdoutSource(ctx, r, r.S.AgentBin, nil, total, 1<<20, syncProtoReader)
	})
	// The kernel's (and Kata's) default pipe size, and a larger one, to
	// show what the agent's default buys; read by the judged client, so
	// that the agent's share shows.
	add("wren, 1 MiB reads, ReadStream client, 64 KiB pipes", func() (*stdoutSource, error) {
		return wrenStdoutSource(ctx, r, r.S.AgentBin, pipeConfig(r, 64<<10), total, 1<<20, streamReader)
	})
	add("wren, 1 MiB reads, ReadStream client, 1 MiB pipes", func() (*stdoutSource, error) {
		return wrenStdoutSource(ctx, r, r.S.AgentBin, pipeConfig(r, 1<<20), total, 1<<20, streamReader)
	})
	return sources
}

// closeStdoutSources tears the streams down, noting what fails.
func closeStdoutSources(fig *Figure, sources []*stdoutSource) {
	for _, s := range sources {
		if s.close != nil {
			if err := s.close(); err != nil {
				fig.Note("%s: teardown: %v", s.subject, err)
			}
		}
	}
}

// readStdoutRounds reads the streams in turn, a segment from each, starting
// one later each round, until all are read or the deadline passes.
func readStdoutRounds(ctx context.Context, sources []*stdoutSource, segment, total int64, deadline time.Time) {
	for round := 0; ctx.Err() == nil && time.Now().Before(deadline); round++ {
		active := 0
		for i := range sources {
			s := sources[(round+i)%len(sources)]
			if s.err != nil || s.total >= total {
				continue
			}
			active++
			for {
				readSegment(ctx, s, min(segment, total-s.total), total)
				if !s.whole || s.err != nil || s.total >= total {
					break
				}
			}
		}
		if active == 0 {
			break
		}
	}
}

// addStdoutResults adds each stream's throughput and notes its overall rate
// and CPU cost, and returns the metrics by subject.
func addStdoutResults(fig *Figure, sources []*stdoutSource, total int64, budget time.Duration) map[string]Metric {
	results := map[string]Metric{}
	for _, s := range sources {
		if s.err != nil {
			fig.Skip(s.subject, s.err)
			continue
		}
		if s.total < total {
			fig.Note("%s: stopped after %d MiB: the figure's %s budget ran out", s.subject, s.total>>20, budget.Round(time.Second))
		}
		m := fig.Add(s.subject, "throughput", "MB/s", s.rates)
		fig.Metrics[len(fig.Metrics)-1].HigherIsBetter = true
		results[s.subject] = m
		note := fmt.Sprintf("%s: %.1f MB/s overall", s.subject, float64(s.total)/s.elapsed.Seconds()/1e6)
		perMiB := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 / (float64(s.total) / (1 << 20)) }
		if s.cpu != nil && s.total > 0 {
			note += fmt.Sprintf("; CPU per MiB: agent %.2f ms, client (this benchmark) %.2f ms", perMiB(s.cpuUsed), perMiB(s.clientCPU))
		}
		fig.Note("%s", note)
	}
	return results
}

// addStdoutRatios adds the ratios between streams that were measured, and
// judges the goal on the ReadStream client.
func addStdoutRatios(fig *Figure, results map[string]Metric) {
	ratio := func(name, num, den string, goal float64) {
		n, okN := results[num]
		d, okD := results[den]
		if okN && okD {
			fig.AddRatio(name, n, d, 0, goal)
		}
	}
	const judged = "wren, 1 MiB reads, ReadStream client"
	ratio("wren ReadStream client / raw, 1 MiB reads", judged, "raw socket, 1 MiB reads", 0.5)
	ratio("wren stock client / raw, 1 MiB reads", "wren, 1 MiB reads", "raw socket, 1 MiB reads", 0)
	ratio("wren stock client / raw, 32 KiB reads", "wren, 32 KiB reads", "raw socket, 32 KiB reads", 0)
	ratio("wren sync client, proto decode / raw, 1 MiB reads", "wren, 1 MiB reads, sync client, proto decode", "raw socket, 1 MiB reads", 0)
	ratio("wren ReadStream client / stock client, 1 MiB reads", judged, "wren, 1 MiB reads", 0)
	ratio("wren 64 KiB pipes / raw, 1 MiB reads", "wren, 1 MiB reads, ReadStream client, 64 KiB pipes", "raw socket, 1 MiB reads", 0)
	ratio("wren 1 MiB pipes / raw, 1 MiB reads", "wren, 1 MiB reads, ReadStream client, 1 MiB pipes", "raw socket, 1 MiB reads", 0)
	ratio("wren / wren (before), 1 MiB reads, ReadStream client", judged, "wren (before), 1 MiB reads, ReadStream client", 0)
	ratio("wren / wren (before), 1 MiB reads", "wren, 1 MiB reads", "wren (before), 1 MiB reads", 0)
	ratio("wren / wren (before), 32 KiB reads", "wren, 32 KiB reads", "wren (before), 32 KiB reads", 0)
	if _, ok := results[judged]; ok {
		fig.Judged = judged
		fig.Note("goal judged on %q (the agent's own share); the stock client's ratio beside it is what a Go shim sees", judged)
	}
}

// readSegment reads n bytes of s and records their rate and CPU time.
func readSegment(ctx context.Context, s *stdoutSource, n, total int64) {
	var cpu0 time.Duration
	if s.cpu != nil {
		cpu0, _ = s.cpu()
	}
	self0, _ := processCPU(os.Getpid())
	start := time.Now()
	got, err := s.read(ctx, n)
	took := time.Since(start)
	if s.cpu != nil {
		if cpu1, ok := s.cpu(); ok {
			s.cpuUsed += cpu1 - cpu0
		}
	}
	if self1, ok := processCPU(os.Getpid()); ok {
		s.clientCPU += self1 - self0
	}
	s.total += got
	s.elapsed += took
	if got > 0 {
		s.rates = append(s.rates, float64(got)/took.Seconds()/1e6)
	}
	switch {
	case err != nil:
		s.err = err
	case got == 0:
		s.err = fmt.Errorf("EOF after %d of %d bytes while the writer was still writing (stream truncated)", s.total, total)
	}
}

// stdoutAgentEnv turns the agents' idle memory release off: between its
// segments each agent idles while the others are read, and a release
// there makes its next segment fault its heap back in, which a continuous
// stream never does.
var stdoutAgentEnv = []string{"WREN_AGENT_IDLE_RELEASE=off"}

// stdoutReader is how figure 7 reads a wren stream.
type stdoutReader int

const (
	// stockReader: ReadStdout on the stock containerd/ttrpc client, the
	// connection the setup calls used (as a Go shim reads).
	stockReader stdoutReader = iota
	// syncProtoReader: Sync.Call on a connection of its own, decoding
	// each reply into a fresh ReadStreamResponse.
	syncProtoReader
	// streamReader: Sync.ReadStream on a connection of its own.
	streamReader
)

// wrenStdoutSource starts an agent, a sandbox and the dd container, and
// reads its stdout with ReadStdout calls of readLen through reader.
func wrenStdoutSource(ctx context.Context, r *Runner, bin string, args []string, total int64, readLen int, reader stdoutReader) (_ *stdoutSource, err error) {
	agent, err := StartAgent(ctx, bin, r.S.WorkDir, stdoutAgentEnv, args...)
	if err != nil {
		return nil, err
	}
	var cleanup undoStack
	cleanup.push(agent.Stop)
	defer func() {
		if err != nil {
			_ = cleanup.run() // best effort: err is the one to report
		}
	}()
	c, err := agent.Dial(ctx)
	if err != nil {
		return nil, err
	}
	cleanup.push(c.Close)
	p, err := newPod(ctx, r, c)
	if err != nil {
		return nil, err
	}
	// Several agents run at once, and container cgroups are host-wide:
	// the ids must differ between agents.
	id := fmt.Sprintf("dd-%d", agent.PID())
	spec := p.bundle.Spec("/bin/dd", "if=/dev/zero", "bs=1M", fmt.Sprintf("count=%d", total>>20))
	if err := p.start(ctx, id, spec); err != nil {
		return nil, err
	}
	var read int64
	cleanup.push(func() error {
		if read < total {
			return p.stop(ctx, id)
		}
		if _, err := p.wait(ctx, id, id); err != nil {
			return err
		}
		return p.remove(ctx, id)
	})
	readOnce, closeReader, err := openStdoutReader(ctx, reader, p, agent.Addr, id, readLen)
	if err != nil {
		return nil, err
	}
	if closeReader != nil {
		cleanup.push(closeReader)
	}
	pid := agent.PID()
	return &stdoutSource{
		read: func(ctx context.Context, n int64) (int64, error) {
			got, err := readStdoutUpTo(ctx, readOnce, n)
			if err != nil {
				return got, err
			}
			read += got
			return got, nil
		},
		close: cleanup.run,
		cpu:   func() (time.Duration, bool) { return processCPU(pid) },
	}, nil
}

// readOnceFunc makes one ReadStdout call and returns how many bytes it
// brought; 0 is EOF.
type readOnceFunc func(ctx context.Context) (int, error)

// openStdoutReader returns how reader reads the stdout of container id,
// readLen bytes a call, and what closes the connection of its own it
// dialed to the agent at addr (nil for the stock client, which shares p's).
func openStdoutReader(ctx context.Context, reader stdoutReader, p *pod, addr, id string, readLen int) (readOnceFunc, func() error, error) {
	req := &agentpb.ReadStreamRequest{ContainerId: id, ExecId: id, Len: uint32(readLen)}
	var readOnce readOnceFunc
	var closeConn func() error
	switch reader {
	case stockReader:
		readOnce = func(ctx context.Context) (int, error) {
			resp, err := p.c.Agent.ReadStdout(ctx, req)
			return len(resp.GetData()), err
		}
	case syncProtoReader, streamReader:
		sc, err := client.DialSync(ctx, addr)
		if err != nil {
			return nil, nil, err
		}
		closeConn = sc.Close
		if reader == syncProtoReader {
			readOnce = func(ctx context.Context) (int, error) {
				resp := &agentpb.ReadStreamResponse{}
				err := sc.Call(ctx, "grpc.AgentService", "ReadStdout", req, resp)
				return len(resp.Data), err
			}
		} else {
			readOnce = func(ctx context.Context) (int, error) {
				data, err := sc.ReadStream(ctx, false, id, id, readLen)
				if err == io.EOF {
					return 0, nil
				}
				return len(data), err
			}
		}
	}
	return readOnce, closeConn, nil
}

// readStdoutUpTo calls readOnce until it has about n bytes or EOF, each call
// bounded by rpcTimeout, and returns how many bytes it read.
func readStdoutUpTo(ctx context.Context, readOnce readOnceFunc, n int64) (int64, error) {
	var got int64
	for got < n {
		cctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		m, err := readOnce(cctx)
		cancel()
		if err != nil {
			return got, fmt.Errorf("ReadStdout: %w", err)
		}
		if m == 0 {
			break
		}
		got += int64(m)
	}
	return got, nil
}

// rawStdoutSource starts the copy helper and reads its socket with a
// buffer of readLen.
func rawStdoutSource(r *Runner, total int64, readLen int) (*stdoutSource, error) {
	h, err := StartHelper(r.S.WorkDir, CopyHelperArgs(total, 1<<20)...)
	if err != nil {
		return nil, err
	}
	conn, err := net.Dial("unix", h.Path)
	if err != nil {
		h.Stop()
		return nil, err
	}
	buf := make([]byte, readLen)
	return &stdoutSource{
		read: func(_ context.Context, n int64) (int64, error) {
			var got int64
			for got < n {
				m, err := conn.Read(buf)
				got += int64(m)
				if err == io.EOF {
					break
				}
				if err != nil {
					return got, err
				}
			}
			return got, nil
		},
		close: func() error {
			conn.Close()
			h.Stop()
			return nil
		},
		whole: true,
	}, nil
}

// processCPU is the user+system CPU time of pid (all its threads).
func processCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// Fields after the command name, which may hold spaces: state is
	// field 3, utime 14, stime 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	const userHZ = 100 // /proc reports clock ticks of USER_HZ, 100 on Linux
	return time.Duration(utime+stime) * time.Second / userHZ, true
}

// pipeConfig writes an agent config file that sets container_pipe_size
// and returns the agent arguments that load it.
func pipeConfig(r *Runner, size int) []string {
	path := filepath.Join(r.S.WorkDir, fmt.Sprintf("pipe-%d.toml", size))
	if err := os.WriteFile(path, []byte(fmt.Sprintf("container_pipe_size = %d\n", size)), 0o644); err != nil {
		return nil
	}
	return []string{"--config", path}
}
