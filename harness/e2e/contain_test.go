package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/wren-vm/wren/harness/kata"
	"github.com/wren-vm/wren/harness/vm"
)

// testKataPIDNamespace runs a container shaped as Kata's shim sends it (no
// pid namespace in the spec) and checks from inside that it is PID 1 of a
// namespace of its own: it sees neither the agent nor the guest.
func (p *pod) testKataPIDNamespace(t *testing.T) {
	c := p.newContainer(t, "pidns", "/bin/sh", "-c", "echo $$; cat /proc/1/comm; ls -d /proc/[0-9]* | wc -l")
	out := p.run(t, c, nil)
	f := strings.Fields(out.stdout)
	if len(f) != 3 || f[0] != "1" || f[1] != "sh" {
		t.Fatalf("inside a Kata-shaped container: %q (stderr %q), want pid 1 and its own sh as /proc/1", out.stdout, out.stderr)
	}
	// sh, ls and wc: nothing of the guest's.
	if n, err := strconv.Atoi(f[2]); err != nil || n > 3 {
		t.Errorf("the container sees %s processes, want at most its own 3", f[2])
	}
	record(t, "confinement", "pod VM: Kata-shaped container's own pid / processes it sees", f[0]+" / "+f[2])
}

// record logs one figure for docs/reliability.md (scripts/reliability-report
// reads these lines, as it does harness/reliability's).
func record(t *testing.T, kind, name string, value any) {
	t.Helper()
	t.Logf("RELIABILITY kind=%s name=%s value=%v", kind, strings.ReplaceAll(name, " ", "_"), value)
}

// probePort is a port on the host side of the hybrid vsock that the test
// serves itself: the probe reaching it shows the probe works, so the
// refusals it reports for the agent's ports are the guest's doing.
const probePort = 5000

// testContainerCannotReachAgent runs, inside a container with runc's
// default spec, a program that connects to every vsock port the agent
// serves (API, log stream, debug console) at every CID a guest process
// could name: the local CID, the host, the guest's own and the
// hypervisor's. None may answer; the host's test port must.
//
// The probe runs from a copy in a tmpfs the container's shell writes, not
// from the share: under TCG a program virtiofsd has just read into pages
// that held other code can run that code's stale translations
// (docs/pod-vm.md, "arm64"); pages the guest CPU writes have none. The
// copy is overwritten afterwards for the same reason, before its pages are
// freed for whatever the share brings next.
func (p *pod) testContainerCannotReachAgent(t *testing.T) {
	c := p.newContainer(t, "vsockprobe", "/bin/sh", "-c",
		fmt.Sprintf("ls -d /sys/module/vsock_loopback 2>/dev/null || echo no-loopback; "+
			"cp /bin/vsockprobe /probe/ && /probe/vsockprobe -cids 0,1,2,%d -ports %d,%d,%d,%d; rc=$?; "+
			"dd if=/dev/zero of=/probe/vsockprobe bs=1M count=8 conv=notrunc 2>/dev/null; exit $rc",
			p.vm.State.GuestCID, vm.AgentPort, vm.LogPort, vm.DebugConsolePort, probePort))
	c.spec.Mounts = append(c.spec.Mounts, specs.Mount{Destination: "/probe", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=755", "size=16m"}})
	bin := filepath.Join(kata.HostRootfs(p.vm.SharedDir, c.id), "bin", "vsockprobe")
	build := exec.Command("go", "build", "-o", bin, "./testdata/vsockprobe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if p.goarch != "" {
		build.Env = append(build.Env, "GOARCH="+p.goarch)
	}
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the probe: %v\n%s", err, b)
	}

	// The control: a host service on the hybrid vsock's guest-to-host side.
	ln, err := net.Listen("unix", fmt.Sprintf("%s_%d", p.vm.HybridVsock(), probePort))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			// Answer the probe's request, then hold the connection until
			// the probe closes it: closing first could reset the stream
			// before the answer is read.
			go func() {
				defer conn.Close()
				buf := make([]byte, 512)
				if _, err := conn.Read(buf); err != nil {
					return
				}
				_, _ = conn.Write([]byte("host here\n"))
				_, _ = io.Copy(io.Discard, conn)
			}()
		}
	}()

	out := p.run(t, c, nil)
	if out.code != 0 {
		t.Fatalf("probe exit %d: %s %s", out.code, out.stdout, out.stderr)
	}
	lines := strings.Split(strings.TrimSpace(out.stdout), "\n")
	if len(lines) == 0 || lines[0] != "no-loopback" {
		t.Errorf("the guest has a local vsock transport: %q", lines[0])
	}
	results := map[string]string{}
	for _, l := range lines[1:] {
		target, res, _ := strings.Cut(l, " ")
		results[target] = res
	}
	control := fmt.Sprintf("2:%d", probePort)
	if !strings.HasPrefix(results[control], "answered") {
		t.Fatalf("the probe could not reach the host's test port (%s: %q): its refusals prove nothing\n%s", control, results[control], out.stdout)
	}
	reached := 0
	for target, res := range results {
		if target == control {
			continue
		}
		if !strings.HasPrefix(res, "refused") && res != "closed" {
			reached++
			t.Errorf("a container reached vsock %s: %s", target, res)
		}
	}
	record(t, "confinement", "pod VM: vsock targets a container reaches (CIDs 0-3 x ports 1024-1026, 5000 but the host test port)", fmt.Sprintf("%d of %d", reached, len(results)-1))
	record(t, "confinement", "pod VM: local vsock transport in the guest", lines[0])
	if len(results) != 4*4 {
		t.Errorf("%d probe results, want 16:\n%s", len(results), out.stdout)
	}
	t.Logf("probe from a container:\n%s", out.stdout)
	p.checkAgentAnswers(t)
}

// checkAgentAnswers makes sure the agent still serves the host.
func (p *pod) checkAgentAnswers(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	if err := p.vm.Check(ctx); err != nil {
		t.Errorf("the agent does not answer the host after the probe: %v", err)
	}
}
