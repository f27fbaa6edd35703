package reliability

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/sys/capability"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// TestConfinement starts a container with runc's default spec through the
// API and checks from inside it that it cannot see or signal the agent or
// another pod's container, cannot mount, has exactly the spec's
// capabilities, and cannot write its masked and read-only paths.
func TestConfinement(t *testing.T) {
	p := newPod(t)
	p.run("other", p.spec("/bin/sleep", "1000"))
	s := p.spec("/bin/sleep", "1000")
	p.run("inmate", s)
	agentPid := p.a.Cmd.Process.Pid

	type check struct {
		name string
		cmd  string
		want string // stdout
	}
	checks := []check{
		// Both containers and the agent's children run sleep; the inmate
		// sees only its own init.
		{"sees only its own processes", "cat /proc/[0-9]*/comm | grep -c '^sleep$'", "1\n"},
		{"does not see the agent", "cat /proc/[0-9]*/comm | grep -c wren-agent || true", "0\n"},
		{"cannot signal the agent", fmt.Sprintf("kill -0 %d 2>/dev/null && echo reached || echo denied", agentPid), "denied\n"},
		{"cannot mount", "mkdir -p /tmp/m; mount -t tmpfs none /tmp/m 2>/dev/null && echo mounted || echo denied", "denied\n"},
		{"cannot write a read-only path", "echo 1 > /proc/sys/kernel/hostname 2>/dev/null && echo wrote || echo denied", "denied\n"},
		{"cannot write sysrq-trigger", "echo h > /proc/sysrq-trigger 2>/dev/null && echo wrote || echo denied", "denied\n"},
		{"masked kcore is empty", "wc -c < /proc/kcore 2>/dev/null || echo 0", "0\n"},
		{"no raw block devices", "ls /dev | grep -c -E '^(sd|vd|nvme|dm-)' || true", "0\n"},
	}
	for _, c := range checks {
		out, code := p.exec("inmate", "/bin/sh", "-c", c.cmd)
		if out != c.want {
			t.Errorf("%s: %q (exit %d), want %q", c.name, out, code, c.want)
		}
		record(t, "confinement", c.name, strings.TrimSpace(out))
	}

	// Capabilities: exactly the spec's bounding/effective sets.
	out, _ := p.exec("inmate", "/bin/sh", "-c", "grep -E '^Cap(Eff|Bnd|Prm|Amb):' /proc/self/status")
	want := capMask(t, s.Process.Capabilities.Effective)
	wantBnd := capMask(t, s.Process.Capabilities.Bounding)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			t.Fatalf("status line %q", line)
		}
		got, err := strconv.ParseUint(f[1], 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		switch f[0] {
		case "CapEff:", "CapPrm:":
			if got != want {
				t.Errorf("%s %#x, spec asks %#x", f[0], got, want)
			}
		case "CapBnd:":
			if got != wantBnd {
				t.Errorf("CapBnd %#x, spec asks %#x", got, wantBnd)
			}
		case "CapAmb:":
			if got != 0 {
				t.Errorf("CapAmb %#x, spec asks none", got)
			}
		}
	}
	record(t, "confinement", "capabilities equal the spec's", fmt.Sprintf("%#x", want))
	for _, c := range []string{"CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_TIME", "CAP_SYS_BOOT"} {
		if want&capMask(t, []string{c}) != 0 {
			t.Errorf("default spec grants %s", c)
		}
	}
	record(t, "confinement", "cannot load modules (no CAP_SYS_MODULE)", "yes")

	// Seccomp: the default spec asks for no filter; a spec that asks for
	// one gets exactly it.
	if out, _ := p.exec("inmate", "/bin/sh", "-c", "grep '^Seccomp:' /proc/self/status"); out != "Seccomp:\t0\n" {
		t.Errorf("unfiltered container: %q, want Seccomp 0", out)
	}
	filtered := p.spec("/bin/sleep", "1000")
	filtered.Linux.Seccomp = &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64},
		Syscalls: []specs.LinuxSyscall{{
			Names:  []string{"mkdir", "mkdirat"},
			Action: specs.ActErrno,
		}},
	}
	p.run("filtered", filtered)
	out, _ = p.exec("filtered", "/bin/sh", "-c", "grep '^Seccomp:' /proc/self/status; mkdir /tmp/blocked 2>/dev/null && echo made || echo denied; touch /tmp/allowed && echo touched")
	if out != "Seccomp:\t2\ndenied\ntouched\n" {
		t.Errorf("seccomp profile denying mkdir: %q, want filter mode 2, mkdir denied, touch allowed", out)
	}
	record(t, "confinement", "seccomp profile applied as the spec asks", strings.ReplaceAll(strings.TrimSpace(out), "\n", "; "))

	// The other container's processes are not visible either: its sleep
	// has a pid in another namespace, and the inmate sees exactly two.
	if _, err := unix.Getpgid(agentPid); err != nil {
		t.Fatalf("agent pid %d: %v", agentPid, err)
	}
}

func capMask(t *testing.T, names []string) uint64 {
	t.Helper()
	var m uint64
	for _, n := range names {
		found := false
		for _, c := range capability.ListKnown() {
			if "CAP_"+strings.ToUpper(c.String()) == n {
				m |= 1 << uint(c)
				found = true
			}
		}
		if !found {
			t.Fatalf("unknown capability %s", n)
		}
	}
	return m
}
