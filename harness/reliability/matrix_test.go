package reliability

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/harness/testagent"
	"github.com/wren-vm/wren/protocols/agentpb"
	"github.com/wren-vm/wren/protocols/typespb"
)

// TestBadInputMatrix sends bad requests to a running agent with a created
// sandbox and a running container, and checks the status code of each and
// that the agent holds no more fds, children, mounts or cgroups than
// before it; storage rows also check that the guest paths they aim at are
// as they were (modes, owners, mounts).
//
// The agent runs as root on the test machine: /etc is shielded (an overlay
// in the agent's own mount namespace), so that a storage request the agent
// wrongly accepts for /etc changes nothing outside the agent's view.
func TestBadInputMatrix(t *testing.T) {
	// The agent gets a network namespace of its own, so the route cases
	// can never change this machine's routes.
	p := newPodOpts(t, testagent.Options{NewNetNS: true, Shield: []string{"/etc"}}, nil)
	agentNet := agentNetns(t, p.a)
	p.run("live", p.spec("/bin/sleep", "1000"))
	// A container whose init has exited, for the updates it must refuse.
	p.run("done", p.spec("/bin/true"))
	if _, err := p.c.Agent.WaitProcess(ctx(t), &agentpb.WaitProcessRequest{ContainerId: "done", ExecId: "done"}); err != nil {
		t.Fatal(err)
	}
	// One exec so that the agent's lazily made helpers (pipes, threads)
	// exist before the baseline.
	p.exec("live", "/bin/true")
	base := p.usage()

	withSpec := func(mod func(s *specs.Spec)) *agentpb.Spec {
		s := p.spec("/bin/true")
		mod(s)
		return ocispec.FromSpec(s)
	}
	create := func(id string, oci *agentpb.Spec) func() error {
		return func() error {
			_, err := p.c.Agent.CreateContainer(ctx(t), &agentpb.CreateContainerRequest{ContainerId: id, OCI: oci})
			return err
		}
	}
	good := withSpec(func(*specs.Spec) {})
	hugeEnv := make([]string, 0, 2000)
	for i := 0; i < 2000; i++ {
		hugeEnv = append(hugeEnv, "K"+strings.Repeat("x", 8)+string(rune('a'+i%26))+"="+strings.Repeat("v", 1000))
	}
	storageWith := func(oci *agentpb.Spec, st *agentpb.Storage) func() error {
		return func() error {
			_, err := p.c.Agent.CreateContainer(ctx(t), &agentpb.CreateContainerRequest{ContainerId: "st", OCI: oci, Storages: []*agentpb.Storage{st}})
			return err
		}
	}
	storage := func(st *agentpb.Storage) func() error { return storageWith(good, st) }
	// A create that fails after its storages are mounted: the bundle
	// refuses a root that is not a directory.
	failsLater := withSpec(func(s *specs.Spec) { s.Root.Path = "/etc/passwd" })
	storageThenFail := func(st *agentpb.Storage) func() error {
		call := storageWith(failsLater, st)
		return func() error {
			err := call()
			if err != nil && !strings.Contains(err.Error(), "root path") {
				t.Errorf("storage at %s: the create failed before its storage was mounted: %v", st.MountPoint, err)
			}
			return err
		}
	}

	// Guest state the storage rows check after the request.
	sr := p.a.StateRoot
	guestMode := func(path string) uint32 {
		var st unix.Stat_t
		if err := unix.Lstat(p.a.GuestPath(path), &st); err != nil {
			t.Fatalf("stat %s in the agent's view: %v", path, err)
		}
		return st.Mode & 0o7777
	}
	unchanged := func(path string) func() string {
		before := guestMode(path)
		return func() string {
			if now := guestMode(path); now != before {
				return fmt.Sprintf("%s mode %o, was %o", path, now, before)
			}
			return ""
		}
	}
	etcUnchanged := unchanged("/etc")
	hostEtc := func() uint32 {
		var st unix.Stat_t
		if err := unix.Stat("/etc", &st); err != nil {
			t.Fatal(err)
		}
		return st.Mode & 0o7777
	}
	hostEtcMode := hostEtc()
	// An existing directory under the state root that a storage may use:
	// whatever the request changes on it must be undone with the request.
	pre := filepath.Join(sr, "sandbox", "local", "pre")
	if err := os.MkdirAll(pre, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pre, "data"), []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	preUnchanged := func() string {
		for path, want := range map[string]uint32{pre: 0o755, filepath.Join(pre, "data"): 0o640} {
			var st unix.Stat_t
			if err := unix.Lstat(path, &st); err != nil {
				return err.Error()
			}
			if st.Mode&0o7777 != want || st.Uid != 0 || st.Gid != 0 {
				return fmt.Sprintf("%s left with mode %o owner %d:%d, was %o 0:0", path, st.Mode&0o7777, st.Uid, st.Gid, want)
			}
		}
		return ""
	}
	// A symlink the host (or a container, through its rootfs) put in the
	// shared directory, pointing out of the state root.
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.MkdirAll(filepath.Join(outside, "victim"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(sr, "shared", "containers"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(sr, "shared", "containers", "planted")); err != nil {
		t.Fatal(err)
	}
	victimUnchanged := func() string {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(outside, "victim"), &st); err != nil || st.Mode&0o7777 != 0o755 {
			return fmt.Sprintf("%s/victim: mode %o %v, want 755", outside, st.Mode&0o7777, err)
		}
		return ""
	}
	sbinMounts := func() int {
		mi, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", p.a.Cmd.Process.Pid))
		n := 0
		for _, l := range strings.Split(string(mi), "\n") {
			if f := strings.Fields(l); len(f) > 4 && (f[4] == "/sbin" || f[4] == "/usr/sbin") {
				n++
			}
		}
		return n
	}
	sbinBefore := sbinMounts()
	sharedShm := filepath.Join(sr, "sandbox", "ephemeral", "shared-shm")
	copyFile := func(path string, size int64, data []byte) func() error {
		return func() error {
			_, err := p.c.Agent.CopyFile(ctx(t), &agentpb.CopyFileRequest{Path: path, FileSize: size, FileMode: 0o644, Data: data})
			return err
		}
	}
	// What a storage row must have left as it was, checked after the row
	// ("" when nothing changed).
	after := map[string]func() string{
		"storage local over /etc": func() string {
			if now := hostEtc(); now != hostEtcMode {
				return fmt.Sprintf("the host's /etc is %o, was %o", now, hostEtcMode)
			}
			return etcUnchanged()
		},
		"storage local over the sandbox dir": unchanged(sr + "/sandbox"),
		"storage local on the state root":    unchanged(sr),
		"storage tmpfs over /sbin": func() string {
			if n := sbinMounts(); n != sbinBefore {
				return fmt.Sprintf("%d mounts at /sbin, were %d", n, sbinBefore)
			}
			return ""
		},
		"storage local through a planted symlink":               victimUnchanged,
		"storage mode of an existing dir after a failed create": preUnchanged,
		"storage shared tmpfs of a failed create": func() string {
			if _, err := os.Stat(sharedShm); err == nil {
				return sharedShm + " left behind"
			}
			return ""
		},
	}
	update := func(id string, r *agentpb.LinuxResources) func() error {
		return func() error {
			_, err := p.c.Agent.UpdateContainer(ctx(t), &agentpb.UpdateContainerRequest{ContainerId: id, Resources: r})
			return err
		}
	}
	routes := func(rs ...*typespb.Route) func() error {
		return func() error {
			_, err := p.c.Agent.UpdateRoutes(ctx(t), &agentpb.UpdateRoutesRequest{Routes: &agentpb.Routes{Routes: rs}})
			if got := defaultRoutes(t, agentNet); len(got) > 0 {
				t.Errorf("the agent's table holds default routes %v after %v", got, rs)
				if err := agentNet.RouteDel(&got[0]); err != nil {
					t.Errorf("removing %v: %v", got[0], err)
				}
			}
			return err
		}
	}
	cases := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"id empty", create("", good), codes.InvalidArgument},
		{"id too long", create(strings.Repeat("a", 2000), good), codes.InvalidArgument},
		{"id dotdot", create("..", good), codes.InvalidArgument},
		{"id dotdot path", create("../../etc", good), codes.InvalidArgument},
		{"id slash", create("/", good), codes.InvalidArgument},
		{"id with slash", create("a/b", good), codes.InvalidArgument},
		{"id NUL", create("a\x00b", good), codes.InvalidArgument},
		{"id unicode", create("ünïcödé", good), codes.InvalidArgument},
		{"id reserved", create("sandbox", good), codes.InvalidArgument},
		{"id duplicate", create("live", good), codes.AlreadyExists},
		{"spec missing", create("nospec", nil), codes.InvalidArgument},
		{"spec no root", create("noroot", withSpec(func(s *specs.Spec) { s.Root = nil })), codes.InvalidArgument},
		{"spec no process", create("noproc", withSpec(func(s *specs.Spec) { s.Process = nil })), codes.InvalidArgument},
		{"spec root not a dir", create("rootfile", withSpec(func(s *specs.Spec) { s.Root.Path = "/etc/passwd" })), codes.InvalidArgument},
		{"spec relative root", create("relroot", withSpec(func(s *specs.Spec) { s.Root.Path = "rootfs" })), codes.InvalidArgument},
		{"spec bad rlimit", create("rlimit", withSpec(func(s *specs.Spec) {
			s.Process.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_BOGUS", Hard: 1, Soft: 2}}
		})), codes.InvalidArgument},
		{"spec bad namespace", create("badns", withSpec(func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: "bogus"})
		})), codes.InvalidArgument},
		{"spec namespace joined by path", create("nspath", withSpec(func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces[:0:0], specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/proc/nonexistent/ns/net"})
		})), codes.InvalidArgument},
		{"spec agent's mount namespace", create("nsagent", withSpec(func(s *specs.Spec) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.MountNamespace, Path: "/proc/1/ns/mnt"})
		})), codes.InvalidArgument},
		{"spec missing binary", create("nobin", withSpec(func(s *specs.Spec) { s.Process.Args = []string{"/no/such/binary"} })), codes.Internal},
		// A profile the agent cannot apply must be refused, never ignored.
		{"spec seccomp unknown action", create("seccomp", withSpec(func(s *specs.Spec) {
			s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"mount"}, Action: "SCMP_ACT_BOGUS"}}}
		})), codes.InvalidArgument},
		{"spec huge env", create("hugeenv", withSpec(func(s *specs.Spec) { s.Process.Env = append(s.Process.Env, hugeEnv...) })), codes.OK},
		{"storage unknown driver", storage(&agentpb.Storage{Driver: "nosuchdriver", MountPoint: "/run/kata-containers/x"}), codes.InvalidArgument},
		{"storage failing mount option", storage(&agentpb.Storage{Driver: "ephemeral", Source: "tmpfs", Fstype: "tmpfs", MountPoint: sr + "/sandbox/ephemeral/eph", Options: []string{"size=notanumber"}}), codes.Internal},
		{"storage unknown option", storage(&agentpb.Storage{Driver: "local", Source: "local", MountPoint: sr + "/sandbox/local/loc", Options: []string{"mode=zzz"}}), codes.InvalidArgument},
		{"storage local over /etc", storage(&agentpb.Storage{Driver: "local", Source: "local", Fstype: "local", MountPoint: "/etc", Options: []string{"mode=4777"}}), codes.InvalidArgument},
		{"storage local over the sandbox dir", storage(&agentpb.Storage{Driver: "local", Source: "local", Fstype: "local", MountPoint: sr + "/sandbox", Options: []string{"mode=0777"}}), codes.InvalidArgument},
		{"storage local on the state root", storage(&agentpb.Storage{Driver: "local", Source: "local", Fstype: "local", MountPoint: sr, Options: []string{"mode=0777"}}), codes.InvalidArgument},
		{"storage tmpfs over /sbin", storage(&agentpb.Storage{Driver: "ephemeral", Source: "tmpfs", Fstype: "tmpfs", MountPoint: "/sbin"}), codes.InvalidArgument},
		{"storage local through a planted symlink", storage(&agentpb.Storage{Driver: "local", Source: "local", Fstype: "local", MountPoint: sr + "/shared/containers/planted/victim", Options: []string{"mode=4777"}}), codes.InvalidArgument},
		{"storage mode of an existing dir after a failed create", storageThenFail(&agentpb.Storage{Driver: "local", Source: "local", Fstype: "local", MountPoint: pre, Options: []string{"mode=4777", "fsgid=4321"}, FsGroup: &agentpb.FSGroup{GroupId: 4321}}), codes.InvalidArgument},
		{"storage shared tmpfs of a failed create", storageThenFail(&agentpb.Storage{Driver: "ephemeral", Source: "tmpfs", Fstype: "tmpfs", MountPoint: sharedShm, Shared: true}), codes.InvalidArgument},
		{"start unknown", func() error {
			_, err := p.c.Agent.StartContainer(ctx(t), &agentpb.StartContainerRequest{ContainerId: "nope"})
			return err
		}, codes.NotFound},
		{"start twice", func() error {
			_, err := p.c.Agent.StartContainer(ctx(t), &agentpb.StartContainerRequest{ContainerId: "live"})
			return err
		}, codes.FailedPrecondition},
		{"update stopped container", update("done", &agentpb.LinuxResources{Memory: &agentpb.LinuxMemory{Limit: 64 << 20}}), codes.FailedPrecondition},
		// No process lives in one byte: on cgroup v2 the kernel takes the
		// limit and OOM-kills the container.
		{"update memory limit 1 byte", update("live", &agentpb.LinuxResources{Memory: &agentpb.LinuxMemory{Limit: 1}}), codes.InvalidArgument},
		// All traffic would go to the loopback device.
		{"route default via lo", routes(&typespb.Route{Dest: "0.0.0.0/0", Device: "lo"}), codes.InvalidArgument},
		{"route default via 127.0.0.1", routes(&typespb.Route{Dest: "default", Gateway: "127.0.0.1"}), codes.InvalidArgument},
		{"exec unknown container", func() error {
			_, err := p.c.Agent.ExecProcess(ctx(t), &agentpb.ExecProcessRequest{ContainerId: "nope", ExecId: "e", Process: good.Process})
			return err
		}, codes.NotFound},
		{"exec no process", func() error {
			_, err := p.c.Agent.ExecProcess(ctx(t), &agentpb.ExecProcessRequest{ContainerId: "live", ExecId: "e"})
			return err
		}, codes.InvalidArgument},
		{"exec empty id", func() error {
			_, err := p.c.Agent.ExecProcess(ctx(t), &agentpb.ExecProcessRequest{ContainerId: "live", Process: good.Process})
			return err
		}, codes.InvalidArgument},
		{"wait unknown exec", func() error {
			_, err := p.c.Agent.WaitProcess(ctx(t), &agentpb.WaitProcessRequest{ContainerId: "live", ExecId: "nope"})
			return err
		}, codes.NotFound},
		{"signal invalid", func() error {
			_, err := p.c.Agent.SignalProcess(ctx(t), &agentpb.SignalProcessRequest{ContainerId: "live", Signal: 999})
			return err
		}, codes.InvalidArgument},
		{"remove unknown", func() error {
			_, err := p.c.Agent.RemoveContainer(ctx(t), &agentpb.RemoveContainerRequest{ContainerId: "nope"})
			return err
		}, codes.NotFound},
		{"read stdout unknown", func() error {
			_, err := p.c.Agent.ReadStdout(ctx(t), &agentpb.ReadStreamRequest{ContainerId: "nope", Len: 10})
			return err
		}, codes.NotFound},
		{"copyfile escape", copyFile(p.a.StateRoot+"/shared/containers/../../../../etc/wren-escape", 1, []byte("x")), codes.InvalidArgument},
		{"copyfile outside shared", copyFile("/etc/wren-escape", 1, []byte("x")), codes.InvalidArgument},
		{"copyfile data beyond size", copyFile(p.a.StateRoot+"/shared/containers/f", 1, []byte("too long")), codes.InvalidArgument},
		{"copyfile negative offset", func() error {
			_, err := p.c.Agent.CopyFile(ctx(t), &agentpb.CopyFileRequest{Path: p.a.StateRoot + "/shared/containers/g", FileSize: 4, Offset: -1, Data: []byte("x")})
			return err
		}, codes.InvalidArgument},
		{"copyfile symlink escape", func() error {
			_, err := p.c.Agent.CopyFile(ctx(t), &agentpb.CopyFileRequest{Path: p.a.StateRoot + "/shared/containers/lnk", FileMode: 0o120777, Data: []byte("/etc")})
			if err != nil {
				return err
			}
			// The link itself may be made; writing through it must not.
			_, err = p.c.Agent.CopyFile(ctx(t), &agentpb.CopyFileRequest{Path: p.a.StateRoot + "/shared/containers/lnk/wren-escape", FileSize: 1, FileMode: 0o644, Data: []byte("x")})
			return err
		}, codes.InvalidArgument},
		{"second CreateSandbox", func() error {
			_, err := p.c.Agent.CreateSandbox(ctx(t), &agentpb.CreateSandboxRequest{})
			return err
		}, codes.AlreadyExists},
	}
	for _, c := range cases {
		err := c.call()
		got := status.Code(err)
		if got != c.want {
			t.Errorf("%s: code %v (%v), want %v", c.name, got, err, c.want)
		}
		if got == codes.OK {
			// Accepted (huge env, or a storage row the agent got wrong): it
			// must also go away cleanly, and not block the rows after it.
			for _, id := range []string{"hugeenv", "st"} {
				_ = p.remove(id) // one of the two may not exist
			}
		}
		p.checkBaseline(c.name, base)
		if check := after[c.name]; check != nil {
			if problem := check(); problem != "" {
				t.Errorf("%s: %s", c.name, problem)
			}
		}
		record(t, "badinput", c.name, got)
	}
	if _, err := p.c.Health.Check(ctx(t), &agentpb.CheckRequest{}); err != nil {
		t.Errorf("Health after the matrix: %v", err)
	}
	if out, code := p.exec("live", "/bin/echo", "alive"); code != 0 || out != "alive\n" {
		t.Errorf("container after the matrix: %q, %d", out, code)
	}
	if _, err := p.c.Agent.RemoveContainer(ctx(t), &agentpb.RemoveContainerRequest{ContainerId: "live"}); err != nil {
		t.Fatal(err)
	}
	if err := p.remove("done"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.c.Agent.RemoveContainer(ctx(t), &agentpb.RemoveContainerRequest{ContainerId: "live"}); status.Code(err) != codes.NotFound {
		t.Errorf("remove twice: %v, want NotFound", err)
	}
	record(t, "badinput", "remove twice", codes.NotFound)
}

// agentNetns returns a handle on the agent's network namespace, with its
// loopback device up (as in a guest), after checking it is not this
// process's.
func agentNetns(t *testing.T, a *testagent.Agent) *netlink.Handle {
	t.Helper()
	pid := a.Cmd.Process.Pid
	mine, err1 := os.Readlink("/proc/self/ns/net")
	theirs, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err1 != nil || err2 != nil || mine == theirs {
		t.Fatalf("the agent shares this process's network namespace (%s, %v; %s, %v)", mine, err1, theirs, err2)
	}
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	ns.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return h
}

// defaultRoutes lists the default routes in h's main table.
func defaultRoutes(t *testing.T, h *netlink.Handle) []netlink.Route {
	t.Helper()
	rs, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	var out []netlink.Route
	for _, r := range rs {
		if r.Dst == nil {
			out = append(out, r)
		} else if ones, _ := r.Dst.Mask.Size(); ones == 0 {
			out = append(out, r)
		}
	}
	return out
}
