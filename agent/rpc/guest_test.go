package rpc

import (
	"context"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wren-vm/wren/agent/config"
	"github.com/wren-vm/wren/agent/copyfile"
	"github.com/wren-vm/wren/agent/device"
	"github.com/wren-vm/wren/agent/hotplug"
	"github.com/wren-vm/wren/agent/metrics"
	"github.com/wren-vm/wren/agent/network"
	"github.com/wren-vm/wren/agent/storage"
	"github.com/wren-vm/wren/internal/testnetns"
	"github.com/wren-vm/wren/internal/testroot"
	"github.com/wren-vm/wren/protocols/agentpb"
	"github.com/wren-vm/wren/protocols/typespb"
)

// serve runs the agent's ttrpc services on a unix socket and returns a
// client, so every test goes through the real wire encoding and status
// codes.
func serve(t *testing.T, a *Agent) agentpb.AgentServiceService {
	t.Helper()
	return agentpb.NewAgentServiceClient(serveConn(t, a))
}

// serveConn is serve's connection, for a client of grpc.Health too.
func serveConn(t *testing.T, a *Agent) *ttrpc.Client {
	t.Helper()
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	Register(srv, a)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(context.Background(), ln) }() // ends with the test's server
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c := ttrpc.NewClient(conn)
	t.Cleanup(func() {
		c.Close()
		srv.Close()
	})
	return c
}

func guestAgent(t *testing.T, nl *netlink.Handle) (*Agent, *GuestServices, string) {
	t.Helper()
	cfg := config.Default()
	cfg.StateRoot = filepath.Join(t.TempDir(), "run/kata-containers")
	devs := device.New(nil, device.Options{})
	netw, err := network.New(nl, devs)
	if err != nil {
		t.Fatal(err)
	}
	gs := &GuestServices{
		Storage:  storage.New(storage.Options{StateRoot: cfg.StateRoot, Devices: devs, Log: slog.Default()}),
		Devices:  devs,
		Network:  netw,
		CopyFile: copyfile.New(storage.SharedDir(cfg.StateRoot)),
		Hotplug:  hotplug.New(""),
		Metrics:  metrics.New(""),
	}
	t.Cleanup(func() { _ = gs.Storage.ReleaseAll(context.Background()) })
	return New(Options{Config: cfg, Guest: gs}), gs, cfg.StateRoot
}

func TestCopyFileThroughTTRPC(t *testing.T) {
	a, _, stateRoot := guestAgent(t, nil)
	c := serve(t, a)
	shared := storage.SharedDir(stateRoot)
	p := shared + "/sb/hostname"
	_, err := c.CopyFile(context.Background(), &agentpb.CopyFileRequest{Path: p, FileSize: 4, FileMode: unix.S_IFREG | 0o644, DirMode: 0o755, Uid: -1, Gid: -1, Data: []byte("pod1")})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "pod1" {
		t.Fatalf("content %q", b)
	}
	outside := filepath.Join(filepath.Dir(stateRoot), "escaped")
	_, err = c.CopyFile(context.Background(), &agentpb.CopyFileRequest{Path: shared + "/../../escaped", FileSize: 1, FileMode: unix.S_IFREG | 0o644, Data: []byte("x")})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("escape: %v", err)
	}
	if _, err := os.Stat(outside); err == nil {
		t.Fatal("escape wrote a file")
	}
}

func TestGetGuestDetails(t *testing.T) {
	a, _, _ := guestAgent(t, nil)
	c := serve(t, a)
	resp, err := c.GetGuestDetails(context.Background(), &agentpb.GuestDetailsRequest{MemBlockSize: true, MemHotplugProbe: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, statErr := os.Stat("/sys/devices/system/memory/block_size_bytes"); statErr != nil {
		if resp.MemBlockSizeBytes != 0 {
			t.Fatalf("block size %d without memory hotplug", resp.MemBlockSizeBytes)
		}
		return
	}
	b, _ := os.ReadFile("/sys/devices/system/memory/block_size_bytes")
	if want := strings.TrimSpace(string(b)); want == "" || resp.MemBlockSizeBytes == 0 {
		t.Fatalf("block size %d (sysfs %q)", resp.MemBlockSizeBytes, want)
	}
	_, probeErr := os.Stat("/sys/devices/system/memory/probe")
	if resp.SupportMemHotplugProbe != (probeErr == nil) {
		t.Fatalf("probe support %v", resp.SupportMemHotplugProbe)
	}
	d := resp.AgentDetails
	if d == nil || !contains(d.StorageHandlers, "virtio-fs") || !contains(d.StorageHandlers, "watchable-bind") || !contains(d.DeviceHandlers, "vfio-pci") || d.InitDaemon {
		t.Fatalf("agent details %+v", d)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestReseedAndClockValidation(t *testing.T) {
	testroot.Require(t)
	a, _, _ := guestAgent(t, nil)
	c := serve(t, a)
	seed := make([]byte, 512)
	for i := range seed {
		seed[i] = byte(i * 7)
	}
	if _, err := c.ReseedRandomDev(context.Background(), &agentpb.ReseedRandomDevRequest{Data: seed}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReseedRandomDev(context.Background(), &agentpb.ReseedRandomDevRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty seed: %v", err)
	}
	// Setting the clock for real would change this machine's time; the VM
	// suite does that. Out-of-range values must not reach settimeofday.
	for _, req := range []*agentpb.SetGuestDateTimeRequest{{Sec: 1, Usec: 1_000_000}, {Sec: -5}, {Sec: 1, Usec: -1}} {
		if _, err := c.SetGuestDateTime(context.Background(), req); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("%v: %v", req, err)
		}
	}
}

// TestSetGuestDateTimeRange: times the kernel cannot hold (the epoch,
// INT64_MAX seconds) are InvalidArgument and never reach the clock; a
// current time does. The clock setter is replaced: a test must never set
// this machine's clock.
func TestSetGuestDateTimeRange(t *testing.T) {
	a, _, _ := guestAgent(t, nil)
	var set []unix.Timeval
	a.setClock = func(tv *unix.Timeval) error {
		set = append(set, *tv)
		return nil
	}
	c := serve(t, a)
	for _, req := range []*agentpb.SetGuestDateTimeRequest{
		{Sec: 0},
		{Sec: 0, Usec: 1},
		{Sec: math.MaxInt64},
		{Sec: math.MaxInt64, Usec: 999_999},
		{Sec: minClockSec - 1, Usec: 999_999},
		{Sec: maxClockSec},
	} {
		_, err := c.SetGuestDateTime(context.Background(), req)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("sec %d usec %d: %v, want InvalidArgument", req.Sec, req.Usec, err)
		}
	}
	if len(set) != 0 {
		t.Fatalf("out-of-range times reached the clock: %v", set)
	}
	if !t.Failed() {
		// A row of docs/reliability.md (scripts/reliability-report.sh).
		t.Logf("RELIABILITY kind=badinput name=SetGuestDateTime_sec_0_and_INT64_MAX_(the_clock_setter_stood_in) value=%v", codes.InvalidArgument)
	}
	now := time.Now()
	if _, err := c.SetGuestDateTime(context.Background(), &agentpb.SetGuestDateTimeRequest{Sec: now.Unix(), Usec: int64(now.Nanosecond() / 1000)}); err != nil {
		t.Fatalf("current time: %v", err)
	}
	if len(set) != 1 || set[0].Sec != now.Unix() {
		t.Fatalf("clock set to %v, want %d s", set, now.Unix())
	}
}

func TestGetMetricsAndDiagnosticData(t *testing.T) {
	a, gs, _ := guestAgent(t, nil)
	dir := t.TempDir()
	logs := map[string]string{"long": filepath.Join(dir, "long"), "link": filepath.Join(dir, "link"), "gone": filepath.Join(dir, "gone")}
	if err := os.WriteFile(logs["long"], []byte(strings.Repeat("x", 5000)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", logs["link"]); err != nil {
		t.Fatal(err)
	}
	gs.TerminationLog = func(id string) (string, error) {
		p, ok := logs[id]
		if !ok {
			return "", status.Errorf(codes.NotFound, "container %s", id)
		}
		return p, nil
	}
	c := serve(t, a)
	m, err := c.GetMetrics(context.Background(), &agentpb.GetMetricsRequest{})
	if err != nil || !strings.Contains(m.Metrics, "kata_agent_scrape_count 1\n") || !strings.Contains(m.Metrics, "kata_guest_meminfo{") {
		t.Fatalf("metrics: %v\n%.300s", err, m.GetMetrics())
	}
	ctx := context.Background()
	d, err := c.GetDiagnosticData(ctx, &agentpb.GetDiagnosticDataRequest{LogType: "termination_log", ContainerId: "long"})
	if err != nil || len(d.Data) != 4096 {
		t.Fatalf("long log: %d bytes, %v", len(d.GetData()), err)
	}
	if d, err := c.GetDiagnosticData(ctx, &agentpb.GetDiagnosticDataRequest{LogType: "termination_log", ContainerId: "gone"}); err != nil || d.Data != "" {
		t.Fatalf("missing log: %q %v", d.GetData(), err)
	}
	if _, err := c.GetDiagnosticData(ctx, &agentpb.GetDiagnosticDataRequest{LogType: "termination_log", ContainerId: "link"}); err == nil {
		t.Fatal("followed a symlinked termination log")
	}
	if _, err := c.GetDiagnosticData(ctx, &agentpb.GetDiagnosticDataRequest{LogType: "termination_log", ContainerId: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown container: %v", err)
	}
	if _, err := c.GetDiagnosticData(ctx, &agentpb.GetDiagnosticDataRequest{LogType: "core", ContainerId: "long"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("unknown type: %v", err)
	}
}

func TestVolumeStatsAndSwapErrors(t *testing.T) {
	a, _, _ := guestAgent(t, nil)
	c := serve(t, a)
	resp, err := c.GetVolumeStats(context.Background(), &agentpb.VolumeStatsRequest{VolumeGuestPath: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Usage) != 2 || resp.Usage[0].Unit != agentpb.VolumeUsage_BYTES || resp.Usage[1].Unit != agentpb.VolumeUsage_INODES || resp.Usage[0].Total == 0 {
		t.Fatalf("usage %+v", resp.Usage)
	}
	if _, err := c.GetVolumeStats(context.Background(), &agentpb.VolumeStatsRequest{VolumeGuestPath: "/nonexistent/vol"}); status.Code(err) != codes.NotFound {
		t.Fatalf("missing volume: %v", err)
	}
	if _, err := c.AddSwap(context.Background(), &agentpb.AddSwapRequest{PCIPath: []uint32{0x40}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad slot: %v", err)
	}
	// No uevent listener in this agent: a PCI wait cannot be served.
	if _, err := c.AddSwap(context.Background(), &agentpb.AddSwapRequest{PCIPath: []uint32{2}}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("no listener: %v", err)
	}
	if _, err := c.AddSwapPath(context.Background(), &agentpb.AddSwapPathRequest{Path: "relative"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("relative swap: %v", err)
	}
}

func TestUnconfiguredAgent(t *testing.T) {
	c := serve(t, New(Options{}))
	if _, err := c.CopyFile(context.Background(), &agentpb.CopyFileRequest{Path: "/run/kata-containers/shared/containers/x"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("CopyFile: %v", err)
	}
	if _, err := c.ListRoutes(context.Background(), &agentpb.ListRoutesRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("ListRoutes: %v", err)
	}
}

func TestNetworkRPCsInNetns(t *testing.T) {
	h := testnetns.Handle(t)
	mac, _ := net.ParseMAC("02:42:ac:11:00:07")
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "tap0_kata", HardwareAddr: mac}, PeerName: "peer0"}); err != nil {
		t.Fatal(err)
	}
	peer, _ := h.LinkByName("peer0")
	if err := h.LinkSetUp(peer); err != nil {
		t.Fatal(err)
	}
	a, _, _ := guestAgent(t, h)
	c := serve(t, a)
	ctx := context.Background()
	got, err := c.UpdateInterface(ctx, &agentpb.UpdateInterfaceRequest{Interface: &typespb.Interface{
		Name: "eth0", HwAddr: mac.String(), Mtu: 1450,
		IPAddresses: []*typespb.IPAddress{{Family: typespb.IPFamily_v4, Address: "10.88.0.5", Mask: "16"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "eth0" || got.Mtu != 1450 || len(got.IPAddresses) == 0 || got.IPAddresses[0].Address != "10.88.0.5" || got.IPAddresses[0].Mask != "16" {
		t.Fatalf("interface %v", got)
	}
	routes, err := c.UpdateRoutes(ctx, &agentpb.UpdateRoutesRequest{Routes: &agentpb.Routes{Routes: []*typespb.Route{
		{Dest: "", Gateway: "10.88.0.1", Device: "eth0"},
		{Dest: "10.88.0.0/16", Device: "eth0", Scope: unix.RT_SCOPE_LINK},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	var gw bool
	for _, r := range routes.Routes {
		if r.Dest == "" && r.Gateway == "10.88.0.1" && r.Device == "eth0" {
			gw = true
		}
	}
	if !gw {
		t.Fatalf("default route missing: %v", routes.Routes)
	}
	if _, err := c.UpdateRoutes(ctx, &agentpb.UpdateRoutesRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("nil routes: %v", err)
	}
	if _, err := c.AddARPNeighbors(ctx, &agentpb.AddARPNeighborsRequest{Neighbors: &agentpb.ARPNeighbors{ARPNeighbors: []*typespb.ARPNeighbor{
		{ToIPAddress: &typespb.IPAddress{Address: "10.88.0.1"}, Device: "eth0", Lladdr: "02:00:00:00:00:01"},
	}}}); err != nil {
		t.Fatal(err)
	}
	list, err := c.ListInterfaces(ctx, &agentpb.ListInterfacesRequest{})
	if err != nil || len(list.Interfaces) != 3 || list.Interfaces[0].Name != "lo" {
		t.Fatalf("interfaces (lo, peer0, eth0, as Kata's agent lists them) %v %v", list, err)
	}
	if _, err := c.UpdateInterface(ctx, &agentpb.UpdateInterfaceRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("nil interface: %v", err)
	}
}

// TestUpdateRoutesDefaultViaLoopback: the network package's refusal of a
// default route through lo reaches the client as InvalidArgument.
func TestUpdateRoutesDefaultViaLoopback(t *testing.T) {
	h := testnetns.Handle(t)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	a, _, _ := guestAgent(t, h)
	c := serve(t, a)
	_, err = c.UpdateRoutes(context.Background(), &agentpb.UpdateRoutesRequest{Routes: &agentpb.Routes{Routes: []*typespb.Route{{Dest: "default", Device: "lo"}}}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("default route via lo: %v, want InvalidArgument", err)
	}
	rs, err := h.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Dst == nil {
			t.Errorf("default route left in the table: %v", r)
		}
	}
}

// CPU and memory hotplug need a VM; a directory stands in for sysfs here
// to check the RPC wiring (memory first, then CPUs, then the cpuset hook).
func TestOnlineCPUMemAndDetailsOnFakeSysfs(t *testing.T) {
	a, gs, _ := guestAgent(t, nil)
	sys := t.TempDir()
	for rel, v := range map[string]string{"cpu/cpu1/online": "0", "memory/memory3/online": "0"} {
		p := filepath.Join(sys, "devices/system", rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gs.Hotplug = hotplug.New(sys)
	hooked := 0
	gs.CPUsOnlined = func(context.Context) error { hooked++; return nil }
	c := serve(t, a)
	if _, err := c.OnlineCPUMem(context.Background(), &agentpb.OnlineCPUMemRequest{Wait: true, NbCpus: 1}); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"cpu/cpu1/online", "memory/memory3/online"} {
		if b, _ := os.ReadFile(filepath.Join(sys, "devices/system", rel)); string(b) != "1" {
			t.Errorf("%s = %q", rel, b)
		}
	}
	if hooked != 1 {
		t.Fatalf("cpuset hook called %d times", hooked)
	}
	// No memory hotplug in this "kernel": block size 0, not an error.
	d, err := c.GetGuestDetails(context.Background(), &agentpb.GuestDetailsRequest{MemBlockSize: true, MemHotplugProbe: true})
	if err != nil || d.MemBlockSizeBytes != 0 || d.SupportMemHotplugProbe {
		t.Fatalf("details %v %v", d, err)
	}
	if _, err := c.MemHotplugByProbe(context.Background(), &agentpb.MemHotplugByProbeRequest{MemHotplugProbeAddr: []uint64{1 << 32}}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("probe without interface: %v", err)
	}
}

// OnlineCPUMem without wait answers at once; a burst of them while one
// onlining is stuck (here: in the cpuset hook) must not pile up a
// goroutine each. They merge into one next run that onlines all the CPUs
// they announced. A directory stands in for sysfs (no CPU hotplug here).
func TestOnlineCPUMemBackgroundIsBounded(t *testing.T) {
	a, gs, _ := guestAgent(t, nil)
	const burst = 40
	sys := t.TempDir()
	for i := 1; i <= burst+1; i++ {
		p := filepath.Join(sys, "devices/system/cpu", "cpu"+strconv.Itoa(i), "online")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("0"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gs.Hotplug = hotplug.New(sys)
	var (
		mu           sync.Mutex
		calls        int
		inHook, most int
	)
	entered := make(chan struct{}, 1)
	gate := make(chan struct{})
	gs.CPUsOnlined = func(context.Context) error {
		mu.Lock()
		calls++
		inHook++
		most = max(most, inHook)
		mu.Unlock()
		select {
		case entered <- struct{}{}:
		default:
		}
		<-gate
		mu.Lock()
		inHook--
		mu.Unlock()
		return nil
	}
	c := serve(t, a)
	ctx := context.Background()
	req := &agentpb.OnlineCPUMemRequest{NbCpus: 1, CpuOnly: true}
	if _, err := c.OnlineCPUMem(ctx, req); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("background onlining never reached the cpuset hook")
	}
	goroutines := runtime.NumGoroutine()
	for i := 0; i < burst; i++ {
		if _, err := c.OnlineCPUMem(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	n := runtime.NumGoroutine()
	close(gate)
	if n > goroutines+5 {
		t.Fatalf("%d background OnlineCPUMem calls left %d more goroutines", burst, n-goroutines)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := a.online.Wait(wctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 2 || most != 1 {
		t.Fatalf("cpuset hook ran %d times, %d at once; want 2 runs (the first, then the merged burst), one at a time", calls, most)
	}
	for i := 1; i <= burst+1; i++ {
		if b, _ := os.ReadFile(filepath.Join(sys, "devices/system/cpu", "cpu"+strconv.Itoa(i), "online")); string(b) != "1" {
			t.Errorf("cpu%d online = %q", i, b)
		}
	}
}
