package bench

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Peer is an OCI runtime CLI (runc, crun) driven on the same bundle.
type Peer struct {
	Name    string
	Bin     string
	Version string
	root    string
}

// FindPeer locates a runtime binary (bin, or name on PATH) and gives it a
// private state root under dir.
func FindPeer(name, bin, dir string) (*Peer, error) {
	if bin == "" {
		p, err := exec.LookPath(name)
		if err != nil {
			return nil, fmt.Errorf("%s is not installed (scripts/bench.sh installs Debian's package): %w", name, err)
		}
		bin = p
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w", bin, err)
	}
	version := strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0]
	root, err := os.MkdirTemp(dir, name+"-root-")
	if err != nil {
		return nil, err
	}
	return &Peer{Name: name, Bin: bin, Version: version, root: root}, nil
}

// command runs the peer with its state root. Its stderr goes to a file,
// not a pipe: a detached container inherits the runtime's stdio, and a
// pipe would keep Wait waiting for the container (spike.md, Q5.7).
func (p *Peer) command(args ...string) (time.Duration, error) {
	errf, err := os.CreateTemp(p.root, "stderr-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(errf.Name())
	defer errf.Close()
	cmd := exec.Command(p.Bin, append([]string{"--root", p.root}, args...)...)
	cmd.Stderr = errf
	t0 := time.Now()
	err = cmd.Run()
	d := time.Since(t0)
	if err != nil {
		b, _ := os.ReadFile(errf.Name())
		msg := strings.TrimSpace(string(b))
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		return d, fmt.Errorf("%s %s: %w: %s", p.Name, strings.Join(args, " "), err, msg)
	}
	return d, nil
}

// Run is `<peer> run --bundle B ID`: create, start, wait and delete.
func (p *Peer) Run(bundle, id string) (time.Duration, error) {
	return p.command("run", "--bundle", bundle, id)
}

// RunDetached starts a long-running container.
func (p *Peer) RunDetached(bundle, id string) error {
	_, err := p.command("run", "--detach", "--bundle", bundle, id)
	return err
}

// Exec runs args in container id and waits for it.
func (p *Peer) Exec(id string, args ...string) (time.Duration, error) {
	return p.command(append([]string{"exec", id}, args...)...)
}

// Delete force-deletes a container.
func (p *Peer) Delete(id string) error {
	_, err := p.command("delete", "--force", id)
	return err
}

// Cleanup deletes whatever the peer left in its root and removes it.
func (p *Peer) Cleanup() {
	entries, _ := os.ReadDir(p.root)
	for _, e := range entries {
		if e.IsDir() {
			_ = p.Delete(e.Name()) // best effort, as the RemoveAll below
		}
	}
	os.RemoveAll(p.root)
}

// peers finds runc and crun; the ones that cannot run are recorded as
// skipped on fig with the reason, found by trying one container.
func (r *Runner) peers(fig *Figure, bundle string) []*Peer {
	var out []*Peer
	for _, pc := range []struct{ name, bin string }{{"runc", r.S.Runc}, {"crun", r.S.Crun}} {
		p, err := FindPeer(pc.name, pc.bin, r.S.WorkDir)
		if err != nil {
			fig.Skip(pc.name, err)
			continue
		}
		if _, err := p.Run(bundle, "probe-"+pc.name); err != nil {
			p.Cleanup()
			if pc.name == "crun" && CgroupMode() == "hybrid" {
				err = fmt.Errorf("crun refuses this hybrid cgroup layout (v1 controllers + cgroup2 at /sys/fs/cgroup/unified); scripts/bench.sh runs the benchmark in a private mount namespace without the cgroup2 mount: %w", err)
			}
			fig.Skip(pc.name, err)
			continue
		}
		fig.Note("%s: %s (%s)", p.Name, p.Version, p.Bin)
		out = append(out, p)
	}
	return out
}
