package apifuzz

import (
	"context"
	"encoding/binary"

	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/wren-vm/wren/agent/assemble"
	"github.com/wren-vm/wren/agent/config"
	"github.com/wren-vm/wren/agent/rpc"
	"github.com/wren-vm/wren/agent/sandbox"
	"github.com/wren-vm/wren/lib/fsremove"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// excluded are the AgentService methods the fuzzer does not call, because
// what they change is global to the machine and no namespace confines it:
//   - SetGuestDateTime sets the system clock;
//   - ReseedRandomDev feeds the kernel's entropy pool;
//   - AddSwap, AddSwapPath enable swap system-wide;
//   - ResizeVolume grows a mounted filesystem's block device in place.
//
// Their validation is covered by the rpc and storage packages' tests.
var excluded = map[string]string{
	"SetGuestDateTime": "sets the machine's clock",
	"ReseedRandomDev":  "writes the machine's entropy pool",
	"AddSwap":          "swapon is machine-wide",
	"AddSwapPath":      "swapon is machine-wide",
	"ResizeVolume":     "resizes a host filesystem in place",
}

// method is one AgentService method called the way ttrpc calls it.
type method struct {
	name string
	req  reflect.Type // *agentpb.XxxRequest
}

var methods = func() []method {
	svc := reflect.TypeOf((*agentpb.AgentServiceService)(nil)).Elem()
	var out []method
	for i := 0; i < svc.NumMethod(); i++ {
		m := svc.Method(i)
		if _, skip := excluded[m.Name]; skip {
			continue
		}
		out = append(out, method{name: m.Name, req: m.Type.In(1)})
	}
	return out
}()

func methodIndex(name string) byte {
	for i, m := range methods {
		if m.name == name {
			return byte(i)
		}
	}
	panic("no method " + name)
}

// longPolls block until something happens; they get a short deadline.
var longPolls = map[string]bool{"GetOOMEvent": true, "ReadStdout": true, "ReadStderr": true, "WaitProcess": true}

const (
	maxCalls   = 8
	callBudget = time.Second
	// hangAfter is how long past its deadline a call may take before the
	// fuzzer calls it a hang.
	hangAfter = 20 * time.Second
)

// call is one decoded request of a fuzz input.
type call struct {
	m       method
	payload []byte
}

// decodeCalls reads [method byte][uint16 length][payload]... .
func decodeCalls(data []byte) []call {
	var out []call
	for len(data) >= 3 && len(out) < maxCalls {
		m := methods[int(data[0])%len(methods)]
		n := int(binary.LittleEndian.Uint16(data[1:3]))
		data = data[3:]
		n = min(n, len(data))
		out = append(out, call{m: m, payload: data[:n]})
		data = data[n:]
	}
	return out
}

// encodeCalls is decodeCalls' inverse, for seeds.
func encodeCalls(calls ...any) []byte {
	var out []byte
	for i := 0; i < len(calls); i += 2 {
		b, err := proto.Marshal(calls[i+1].(proto.Message))
		if err != nil {
			panic(err)
		}
		out = append(out, methodIndex(calls[i].(string)))
		out = binary.LittleEndian.AppendUint16(out, uint16(len(b)))
		out = append(out, b...)
	}
	return out
}

// env is one agent on a fresh state root.
type env struct {
	dir     string // everything of this env lives below
	state   string
	scratch string // where host paths of a request are redirected
	rootfs  string
	agent   *rpc.Agent
	sb      *sandbox.Sandbox
}

func newEnv(t testing.TB, rootfs string) *env {
	t.Helper()
	dir, err := os.MkdirTemp("", "wren-apifuzz-")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{dir: dir, state: filepath.Join(dir, "state"), scratch: filepath.Join(dir, "scratch"), rootfs: rootfs}
	for _, d := range []string{e.state, e.scratch, filepath.Join(dir, "sys")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := config.Config{StateRoot: e.state}
	cfg.CgroupParent = cgroupParent
	// CPU and memory onlining write sysfs: an empty stand-in here.
	a, err := assemble.New(assemble.Options{
		Log: log, Config: cfg, Reaper: testReaper,
		SysfsRoot: filepath.Join(dir, "sys"), NamespaceDir: filepath.Join(dir, "ns"),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.sb = a.Sandbox
	e.agent = a.API
	return e
}

// close destroys the sandbox and removes the env; anything still mounted
// below it makes fsremove refuse, which fails the test.
func (e *env) close(t testing.TB) {
	t.Helper()
	if e.sb.Created() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.sb.DestroySandbox(ctx); err != nil {
			t.Errorf("DestroySandbox at the end: %v", err)
		}
	}
	if err := fsremove.All(e.dir); err != nil {
		t.Errorf("remove fuzz env: %v", err)
	}
}

// invoke runs one call the way the ttrpc server would: decode, then the
// handler. ok is false when the payload does not decode.
func (e *env) invoke(t testing.TB, c call) (resp any, err error, ok bool) {
	req := reflect.New(c.m.req.Elem()).Interface().(proto.Message)
	if proto.Unmarshal(c.payload, req) != nil {
		return nil, nil, false
	}
	e.confine(req.ProtoReflect())
	budget := callBudget
	if longPolls[c.m.name] {
		budget = 50 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	type result struct {
		resp any
		err  error
	}
	done := make(chan result, 1)
	go func() {
		out := reflect.ValueOf(e.agent).MethodByName(c.m.name).Call([]reflect.Value{reflect.ValueOf(ctx), reflect.ValueOf(req)})
		r := result{resp: out[0].Interface()}
		if !out[1].IsNil() {
			r.err = out[1].Interface().(error)
		}
		done <- r
	}()
	select {
	case r := <-done:
		return r.resp, r.err, true
	case <-time.After(budget + hangAfter):
		buf := make([]byte, 1<<20)
		t.Fatalf("%s hung (%v past its deadline): %s\ngoroutines:\n%s", c.m.name, hangAfter, protoText(req), buf[:runtime.Stack(buf, true)])
		return nil, nil, false
	}
}

func protoText(m proto.Message) string {
	s := fmt.Sprint(m)
	if len(s) > 2000 {
		s = s[:2000] + "..."
	}
	return s
}

// Capabilities a fuzzed container may keep: runc's default set. The
// others could reach the machine (clock, modules, raw devices, reboot).
var safeCaps = []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHOWN", "CAP_DAC_OVERRIDE",
	"CAP_FOWNER", "CAP_FSETID", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_RAW", "CAP_SYS_CHROOT", "CAP_SETFCAP"}

// confinedNamespaces every fuzzed container gets, so that its processes
// never share the machine's.
var confinedNamespaces = []string{"pid", "mount", "network", "ipc", "uts"}

// confine rewrites what in a request would reach outside the test's
// sandbox: host paths (storage sources and mount points, device paths,
// bind mounts, the rootfs), hooks, host namespaces, dangerous
// capabilities, kernel modules, remounts (a remount changes a superblock,
// which a mount namespace does not confine) and pseudo-filesystems that are
// the host's own instance (devtmpfs, proc, sysfs). Everything else is fed
// to the handlers as the fuzzer made it.
func (e *env) confine(m protoreflect.Message) {
	switch x := m.Interface().(type) {
	case *agentpb.CreateSandboxRequest:
		x.KernelModules = nil
		x.GuestHookPath = ""
	case *agentpb.Storage:
		x.MountPoint = under(e.state, x.MountPoint)
		if strings.HasPrefix(x.Source, "/") {
			x.Source = under(e.scratch, x.Source)
		}
		if !slices.Contains([]string{"", "tmpfs", "bind", "ext4", "xfs", "virtiofs", "9p"}, x.Fstype) {
			x.Fstype = "tmpfs"
		}
		x.Options = slices.DeleteFunc(x.Options, func(o string) bool {
			return strings.Contains(o, "remount") || strings.Contains(o, "dir=") || strings.Contains(o, "/")
		})
		x.DriverOptions = slices.DeleteFunc(x.DriverOptions, func(o string) bool { return strings.Contains(o, "/") })
	case *agentpb.Device:
		if strings.HasPrefix(x.VmPath, "/") {
			x.VmPath = under(e.scratch, x.VmPath)
		}
	case *agentpb.Spec:
		x.Hooks = nil
		if x.Root != nil {
			x.Root.Path = e.rootfs
		}
		x.Mounts = slices.DeleteFunc(x.Mounts, func(mt *agentpb.Mount) bool {
			return !slices.Contains([]string{"proc", "tmpfs", "devpts", "mqueue"}, mt.GetType()) ||
				slices.ContainsFunc(mt.GetOptions(), func(o string) bool { return strings.Contains(o, "bind") })
		})
	case *agentpb.Linux:
		x.Devices = nil
		// proc is the container's own (new pid namespace), but these
		// files of it still act on the machine.
		for _, p := range []string{"/proc/sysrq-trigger", "/proc/kcore", "/proc/sys"} {
			if !slices.Contains(x.ReadonlyPaths, p) {
				x.ReadonlyPaths = append(x.ReadonlyPaths, p)
			}
		}
		for _, ns := range x.Namespaces {
			ns.Path = ""
		}
		for _, want := range confinedNamespaces {
			if !slices.ContainsFunc(x.Namespaces, func(ns *agentpb.LinuxNamespace) bool { return ns.Type == want }) {
				x.Namespaces = append(x.Namespaces, &agentpb.LinuxNamespace{Type: want})
			}
		}
	case *agentpb.LinuxCapabilities:
		keep := func(l []string) []string {
			return slices.DeleteFunc(l, func(c string) bool { return !slices.Contains(safeCaps, strings.ToUpper(c)) })
		}
		x.Bounding, x.Effective, x.Inheritable, x.Permitted, x.Ambient = keep(x.Bounding), keep(x.Effective), keep(x.Inheritable), keep(x.Permitted), keep(x.Ambient)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				e.confine(v.List().Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				e.confine(mv.Message())
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			e.confine(v.Message())
		}
		return true
	})
}

// under maps p (absolute or not) to a path below root.
func under(root, p string) string {
	return filepath.Join(root, filepath.Clean("/"+p))
}

// state is what a failed request must leave unchanged.
type state struct {
	// at is when the snapshot was taken, in clock ticks since boot (the
	// unit of a process's start time).
	at       uint64
	files    []string
	mounts   []string
	children []string
	cgroups  []string
}

func (e *env) snapshot() state {
	s := state{at: bootTicks()}
	_ = filepath.WalkDir(e.dir, func(p string, d os.DirEntry, err error) error {
		// libcontainer's state directory is shared by all containers and
		// removed with the sandbox; its content is per container.
		if err == nil && p != filepath.Join(e.state, ".libcontainer") {
			s.files = append(s.files, p)
		}
		return nil
	})
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		// Only this env's: other tests on the machine mount and unmount
		// elsewhere.
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], e.dir+"/") {
			s.mounts = append(s.mounts, f[4])
		}
	}
	slices.Sort(s.mounts)
	s.children = children()
	slices.Sort(s.children)
	// Container cgroups; the parent itself is shared and outlives them.
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + cgroupParent + "/*")
	for _, d := range dirs {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			s.cgroups = append(s.cgroups, d)
		}
	}
	return s
}

// children lists this process's children (zombies too) from
// /proc/self/task/*/children: much cheaper than scanning every process,
// and it runs twice per call.
func children() []string {
	files, _ := filepath.Glob("/proc/self/task/*/children")
	var out []string
	for _, f := range files {
		b, _ := os.ReadFile(f)
		out = append(out, strings.Fields(string(b))...)
	}
	return out
}

// clkTck is USER_HZ, the unit of /proc/PID/stat's start time.
const clkTck = 100

func bootTicks() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		panic(err)
	}
	return uint64(ts.Sec)*clkTck + uint64(ts.Nsec)/(1e9/clkTck)
}

// startTicks is a process's start time (field 22 of /proc/PID/stat).
func startTicks(pid string) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 20 {
		return 0, false
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	return v, err == nil
}

func (s state) diff(o state) string {
	// /proc/self/task/*/children may miss a child while the thread that
	// forked it is exiting (it is only exact for stopped children), so a
	// child seen only afterwards counts as new only if it started after
	// the first snapshot.
	o.children = slices.DeleteFunc(slices.Clone(o.children), func(pid string) bool {
		if slices.Contains(s.children, pid) {
			return false
		}
		start, ok := startTicks(pid)
		return ok && start <= s.at
	})
	o.children = append(o.children, slices.DeleteFunc(slices.Clone(s.children), func(pid string) bool {
		return slices.Contains(o.children, pid)
	})...)
	slices.Sort(o.children)
	var out []string
	for _, x := range []struct {
		name string
		a, b []string
	}{{"files", s.files, o.files}, {"mounts", s.mounts, o.mounts}, {"children", s.children, o.children}, {"cgroups", s.cgroups, o.cgroups}} {
		if !slices.Equal(x.a, x.b) {
			out = append(out, fmt.Sprintf("%s: before %q, after %q", x.name, x.a, x.b))
		}
	}
	return strings.Join(out, "; ")
}

// settle waits for a state equal to want (exits and closes are
// asynchronous) and returns the last difference.
func (e *env) settle(want state) string {
	var d string
	for deadline := time.Now().Add(3 * time.Second); ; {
		if d = want.diff(e.snapshot()); d == "" || time.Now().After(deadline) {
			return d
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// keepsState lists the codes after which a request may legitimately have
// changed state: it ran out of time midway (RemoveContainer's timeout), or
// it is a teardown that got partway.
func keepsState(name string, err error) bool {
	switch status.Code(err) {
	case codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return name == "DestroySandbox" || name == "RemoveContainer"
}

var rootfsDir string

func FuzzAgentService(f *testing.F) {
	rootfsDir = setupRootfs(f)
	// The committed corpus (testdata/fuzz/FuzzAgentService) holds seeds();
	// TestWriteSeedCorpus regenerates it.
	f.Fuzz(func(t *testing.T, data []byte) {
		calls := decodeCalls(data)
		if len(calls) == 0 {
			return
		}
		goroutinesBefore := runtime.NumGoroutine()
		e := newEnv(t, rootfsDir)
		base := e.snapshot()
		for _, c := range calls {
			before := e.snapshot()
			_, err, ok := e.invoke(t, c)
			t.Logf("%s: decoded %v, %v", c.m.name, ok, status.Code(err))
			if !ok || err == nil || keepsState(c.m.name, err) {
				continue
			}
			if _, isStatus := status.FromError(err); !isStatus {
				t.Errorf("%s returned a non-status error: %v", c.m.name, err)
			}
			if d := e.settle(before); d != "" {
				t.Fatalf("%s failed (%v) and left state behind: %s", c.m.name, err, d)
			}
		}
		e.close(t)
		base.files = nil // the env directory itself is gone now
		after := e.snapshot()
		after.files = nil
		if d := base.diff(after); d != "" {
			if d = e.settle(base); d != "" {
				t.Fatalf("state left after DestroySandbox: %s", d)
			}
		}
		// OnlineCPUMem without wait onlines in the background on one
		// worker: after the last call, the run in flight and one merged
		// run, each up to hotplug's retry budget (5s) when no CPU appears.
		settle := 3 * time.Second
		if slices.ContainsFunc(calls, func(c call) bool { return c.m.name == "OnlineCPUMem" }) {
			settle = 13 * time.Second
		}
		var n int
		for deadline := time.Now().Add(settle); ; time.Sleep(20 * time.Millisecond) {
			if n = runtime.NumGoroutine(); n <= goroutinesBefore+2 || time.Now().After(deadline) {
				break
			}
		}
		if n > goroutinesBefore+2 {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d, before %d\n%s", n, goroutinesBefore, buf[:runtime.Stack(buf, true)])
		}
	})
}
