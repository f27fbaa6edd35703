package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// withPod starts an agent, connects and creates the sandbox.
func (r *Runner) withPod(ctx context.Context, env []string, args []string, fn func(a *AgentProc, p *pod) error) error {
	return r.withAgentPod(ctx, r.S.AgentBin, env, args, fn)
}

// withAgentPod is withPod for a given agent binary.
func (r *Runner) withAgentPod(ctx context.Context, bin string, env []string, args []string, fn func(a *AgentProc, p *pod) error) error {
	agent, err := StartAgent(ctx, bin, r.S.WorkDir, env, args...)
	if err != nil {
		return err
	}
	defer func() { r.logCleanup("stop the agent", agent.Stop()) }()
	c, err := agent.Dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	p, err := newPod(ctx, r, c)
	if err != nil {
		return err
	}
	return fn(agent, p)
}

// subjectPod is one agent variant (see Runner.agents) with its sandbox.
type subjectPod struct {
	subject string
	pod     *pod
}

// withSubjectPods starts every agent variant at once, each with its own
// sandbox and cgroup parent, so that figures can interleave them sample by
// sample: a before/after pair measured in one run under the same noise.
func (r *Runner) withSubjectPods(ctx context.Context, fn func(pods []subjectPod) error) error {
	variants := r.agents()
	var pods []subjectPod
	var start func(i int) error
	start = func(i int) error {
		if i == len(variants) {
			return fn(pods)
		}
		v := variants[i]
		// Containers of different agents (and of other benchmark runs)
		// must not share cgroups.
		parent := fmt.Sprintf("wren-bench-%d-%d", os.Getpid(), i)
		defer removeCgroupParent(parent)
		return r.withAgentPod(ctx, v.bin, nil, []string{"--cgroup-parent", parent}, func(_ *AgentProc, p *pod) error {
			pods = append(pods, subjectPod{subject: v.subject, pod: p})
			return start(i + 1)
		})
	}
	return start(0)
}

// removeCgroupParent removes the empty cgroup directories an agent's
// containers lived under (libcontainer removes only the containers' own).
func removeCgroupParent(parent string) {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", parent))
	dirs = append(dirs, filepath.Join("/sys/fs/cgroup", parent))
	for _, d := range dirs {
		_ = os.Remove(d)
	}
}

func figLifecycle(ctx context.Context, r *Runner) *Figure {
	n := r.S.LifecycleRuns
	fig := &Figure{
		ID: "5", Title: "Container create+start+wait+remove of /bin/true",
		Method: fmt.Sprintf("The same busybox rootfs and the same spec (runc's `runc spec` template: pid, net, ipc, uts, mount "+
			"namespaces, /proc /dev /sys mounts, masked paths, read-only root) for all three. Wren: CreateContainer + "+
			"StartContainer + WaitProcess + RemoveContainer over the API on one connection (sandbox created first). "+
			"runc and crun: `<rt> run --bundle B ID` as a process, wall time from fork to exit (so their own process "+
			"start-up counts, as it does when a shim calls them). With -baseline-agent, the older agent runs beside the current one "+
			"(its own sandbox and cgroup parent) and is sampled in the same round-robin. 3 warm-ups each, then %d runs each, round-robin.", n),
		Goal:   "≤ 1.0× crun",
		Anchor: "crun README: 100 sequential /bin/true 1.69 s vs runc 3.34 s; spike.md: crun run 14–21 ms, runc run 33–50 ms here",
	}
	b, err := r.sharedBundle()
	if err != nil {
		return failed(fig, "all", err)
	}
	bundle, err := b.WriteBundle("true", b.Spec("/bin/true"))
	if err != nil {
		return failed(fig, "all", err)
	}
	peers := r.peers(fig, bundle)
	defer func() {
		for _, p := range peers {
			p.Cleanup()
		}
	}()
	err = r.withSubjectPods(ctx, func(pods []subjectPod) error {
		samples, err := interleave(ctx, 3, n, pods, peers,
			func(_ int, sp subjectPod) (time.Duration, error) { return sp.pod.runTrue(ctx) },
			func(peer *Peer, i int) (time.Duration, error) {
				return peer.Run(bundle, fmt.Sprintf("%s-run%d", peer.Name, i))
			})
		if err != nil {
			return err
		}
		addInterleaved(fig, samples, pods, peers, "create+start+wait+remove", "run")
		return nil
	})
	if err != nil {
		return failed(fig, "wren", err)
	}
	return fig
}

func figExec(ctx context.Context, r *Runner) *Figure {
	n := r.S.ExecRuns
	fig := &Figure{
		ID: "6", Title: "Exec of /bin/true into a running container",
		Method: fmt.Sprintf("One running container (`/bin/sleep`) per runtime, same bundle as figure 5. Wren: ExecProcess + "+
			"WaitProcess over the API. runc and crun: `<rt> exec ID /bin/true` as a process, wall time. "+
			"With -baseline-agent, the older agent runs beside the current one, sampled in the same round-robin. "+
			"5 warm-ups each, then %d execs each, round-robin.", n),
		Goal:   "≤ 1.0× crun",
		Anchor: "runc BenchmarkExecTrue (libcontainer in-process) 3.7–4.2 ms without exe sealing (runc#4448, #4510); spike.md: crun exec 8–12 ms, runc exec 22–36 ms here",
	}
	b, err := r.sharedBundle()
	if err != nil {
		return failed(fig, "all", err)
	}
	trueBundle, err := b.WriteBundle("true", b.Spec("/bin/true"))
	if err != nil {
		return failed(fig, "all", err)
	}
	sleepBundle, err := b.WriteBundle("sleep", b.Spec("/bin/sleep", "1000000"))
	if err != nil {
		return failed(fig, "all", err)
	}
	peers := r.peers(fig, trueBundle)
	defer func() {
		for _, p := range peers {
			p.Cleanup()
		}
	}()
	running := startPeerSleepers(fig, peers, sleepBundle)
	err = r.withSubjectPods(ctx, func(pods []subjectPod) error {
		ids := make([]string, len(pods))
		for j, sp := range pods {
			id, err := sp.pod.startSleeper(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", sp.subject, err)
			}
			defer func() { r.logCleanup("stop "+id, sp.pod.stop(ctx, id)) }()
			ids[j] = id
		}
		samples, err := interleave(ctx, 5, n, pods, running,
			func(j int, sp subjectPod) (time.Duration, error) { return sp.pod.execTrue(ctx, ids[j]) },
			func(peer *Peer, _ int) (time.Duration, error) { return peer.Exec(peer.Name+"-sleeper", "/bin/true") })
		if err != nil {
			return err
		}
		addInterleaved(fig, samples, pods, running, "ExecProcess+WaitProcess", "exec")
		return nil
	})
	if err != nil {
		return failed(fig, "wren", err)
	}
	return fig
}

// startPeerSleepers starts each peer's sleeping container from
// sleepBundle and returns the peers that run one; a peer that cannot is
// skipped in fig.
func startPeerSleepers(fig *Figure, peers []*Peer, sleepBundle string) []*Peer {
	var running []*Peer
	for _, peer := range peers {
		if err := peer.RunDetached(sleepBundle, peer.Name+"-sleeper"); err != nil {
			fig.Skip(peer.Name, err)
			continue
		}
		running = append(running, peer)
	}
	return running
}

// interleave runs warmup+n rounds; each round times every wren subject
// (pods, in order) and then every peer once, so that all of them see the
// same machine noise. The warm-up rounds are not kept. i counts all
// rounds from 0.
func interleave(ctx context.Context, warmup, n int, pods []subjectPod, peers []*Peer,
	wren func(j int, sp subjectPod) (time.Duration, error),
	peer func(p *Peer, i int) (time.Duration, error)) (map[string][]time.Duration, error) {
	samples := map[string][]time.Duration{}
	for i := 0; i < warmup+n; i++ {
		keep := i >= warmup
		for j, sp := range pods {
			d, err := wren(j, sp)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", sp.subject, err)
			}
			if keep {
				samples[sp.subject] = append(samples[sp.subject], d)
			}
		}
		for _, p := range peers {
			d, err := peer(p, i)
			if err != nil {
				return nil, err
			}
			if keep {
				samples[p.Name] = append(samples[p.Name], d)
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return samples, nil
}

// addInterleaved adds interleave's rows: wren first (pods[0]), the other
// wren subjects and the peers with their ratio to it; the goal (1.0) is on
// crun's.
func addInterleaved(fig *Figure, samples map[string][]time.Duration, pods []subjectPod, peers []*Peer, metric, peerMetric string) {
	w := fig.Add("wren", metric, "ms", Millis(samples["wren"]))
	for _, sp := range pods[1:] {
		b := fig.Add(sp.subject, metric, "ms", Millis(samples[sp.subject]))
		fig.AddRatio("wren / "+sp.subject, w, b, 0, 0)
	}
	for _, p := range peers {
		m := fig.Add(p.Name, peerMetric, "ms", Millis(samples[p.Name]))
		goal := 0.0
		if p.Name == "crun" {
			goal = 1.0
		}
		fig.AddRatio("wren / "+p.Name, w, m, goal, 0)
	}
}
