package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wren-vm/wren/harness/vm"
	"github.com/wren-vm/wren/internal/testbundle"
)

// readmeBlocks returns the ```sh blocks of README.md's section heading.
func readmeBlocks(t *testing.T, heading string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []string
	var cur *strings.Builder
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = line == "## "+heading
		case !in:
		case cur == nil && line == "```sh":
			cur = &strings.Builder{}
		case cur != nil && line == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return blocks
}

// TestReadmeDrivingByHand runs README.md's "Driving an agent by hand" as
// written: its first block starts the shell of a private mount namespace,
// which runs the other blocks (an agent on a unix socket, then a pod VM)
// from a checkout whose bin/ holds the binaries under test. Every file the
// commands make is under the test's TMPDIR.
func TestReadmeDrivingByHand(t *testing.T) {
	requireVM(t)
	bins := binaries(t)
	blocks := readmeBlocks(t, "Driving an agent by hand")
	if len(blocks) != 3 {
		t.Fatalf("README's section has %d sh blocks, want 3 (the namespace's shell, the agent, the VM)", len(blocks))
	}
	shell := strings.Fields(blocks[0])
	if len(shell) == 0 || shell[0] != "unshare" || !strings.Contains(blocks[0], "-m") || !strings.Contains(blocks[0], "--propagation private") {
		t.Fatalf("the first block must open a private mount namespace, not %q", blocks[0])
	}

	work := t.TempDir()
	checkout, tmp := filepath.Join(work, "checkout"), filepath.Join(work, "tmp")
	for _, d := range []string{checkout, tmp} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	scripts, err := filepath.Abs(filepath.Join("..", "..", "scripts"))
	if err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"bin": bins, "scripts": scripts} {
		if err := os.Symlink(target, filepath.Join(checkout, link)); err != nil {
			t.Fatal(err)
		}
	}
	const vmMarker = "--- README: the pod VM"
	script := filepath.Join(work, "readme.sh")
	if err := os.WriteFile(script, []byte("set -e\n"+blocks[1]+"echo '"+vmMarker+"'\n"+blocks[2]), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Whatever a failed run left: the agent, the VM's helpers.
		if ents, _ := os.ReadDir(tmp); len(ents) == 1 {
			wrenctl(t, bins, "", "vm", "down", "--dir", filepath.Join(tmp, ents[0].Name(), "vm"))
		}
		for _, p := range processesMentioning(tmp) {
			var pid int
			if _, err := fmt.Sscanf(p, "%d:", &pid); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL) // best effort: the check below reports what stays
			}
		}
		testbundle.RemoveCgroupParent("wren-by-hand")
	})

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, shell[0], append(shell[1:], script)...)
	cmd.Dir = checkout
	cmd.Env = append(cleanEnv("WREN_ADDR", "WREN_VM_DIR", "TMPDIR"), "TMPDIR="+tmp)
	outb, err := cmd.CombinedOutput()
	out := string(outb)
	if err != nil {
		t.Fatalf("README commands failed: %v\n%s", err, out)
	}
	t.Logf("README commands:\n%s", out)
	host, vmPart, ok := strings.Cut(out, vmMarker)
	if !ok {
		t.Fatalf("the VM block did not run:\n%s", out)
	}
	uname, err := exec.Command("uname", "-r").Output()
	if err != nil {
		t.Fatal(err)
	}
	hello := regexp.MustCompile(`(?m)^hello from busybox on (\S+)$`)
	if m := hello.FindStringSubmatch(host); m == nil || m[1] != strings.TrimSpace(string(uname)) {
		t.Errorf("the container on the host did not greet with the host's kernel %s:\n%s", uname, host)
	}
	if m := hello.FindStringSubmatch(vmPart); m == nil || m[1] == strings.TrimSpace(string(uname)) {
		t.Errorf("the container in the VM did not greet with the guest's kernel:\n%s", vmPart)
	}
	if n := len(regexp.MustCompile(`"status":\s+"SERVING"`).FindAllString(out, -1)); n != 2 {
		t.Errorf("%d Check answers SERVING, want 2:\n%s", n, out)
	}

	// What the session leaves: nothing running, no VM sockets, no pid file,
	// no cgroup parent; and a second vm down is a clean no-op.
	ents, err := os.ReadDir(tmp)
	if err != nil || len(ents) != 1 {
		t.Fatalf("want the one mktemp -d directory in TMPDIR: %v %v", ents, err)
	}
	w := filepath.Join(tmp, ents[0].Name())
	if l := processesMentioning(tmp); len(l) > 0 {
		t.Errorf("left running:\n%s", strings.Join(l, "\n"))
	}
	for _, f := range []string{"vm/vm.json", "vm/vsock.sock", "vm/virtiofs.sock", "vm/shared", "agent.sock"} {
		if _, err := os.Lstat(filepath.Join(w, f)); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", f, err)
		}
	}
	if _, err := os.Stat(vm.VirtiofsdPidFile(filepath.Join(w, "vm", "virtiofs.sock"))); !os.IsNotExist(err) {
		t.Errorf("virtiofsd's pid file left behind: %v", err)
	}
	for _, pattern := range []string{"/sys/fs/cgroup/wren-by-hand", "/sys/fs/cgroup/*/wren-by-hand"} {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			t.Errorf("cgroup parent left behind: %v", m)
		}
	}
	if _, errOut, code := wrenctl(t, bins, "", "vm", "down", "--dir", filepath.Join(w, "vm")); code != 0 || !strings.Contains(errOut, "no VM running in") {
		t.Errorf("second vm down: exit %d, %q", code, errOut)
	}
}

// cleanEnv is the environment without the named variables.
func cleanEnv(drop ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, d := range drop {
			keep = keep && k != d
		}
		if keep {
			env = append(env, kv)
		}
	}
	return env
}
