package apifuzz

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/wren-vm/wren/agent/ocispec"
	"github.com/wren-vm/wren/internal/testbundle"
	"github.com/wren-vm/wren/protocols/agentpb"
	"github.com/wren-vm/wren/protocols/typespb"
)

// seeds are call sequences that reach deep into the handlers: a container's
// whole life, IO, storages, CopyFile, network, and classic bad inputs.
func seeds() map[string][]byte {
	spec := func(args ...string) *agentpb.Spec {
		s := testbundle.Spec("ROOTFS", args...)
		s.Linux.CgroupsPath = ""
		return ocispec.FromSpec(s)
	}
	sb := &agentpb.CreateSandboxRequest{Hostname: "fuzz", SandboxId: "sb1", Dns: []string{"nameserver 10.0.0.1"}}
	return map[string][]byte{
		"container_lifecycle": encodeCalls(
			"CreateSandbox", sb,
			"CreateContainer", &agentpb.CreateContainerRequest{ContainerId: "c1", OCI: spec("/bin/sh", "-c", "echo hi; sleep 1")},
			"StartContainer", &agentpb.StartContainerRequest{ContainerId: "c1"},
			"ExecProcess", &agentpb.ExecProcessRequest{ContainerId: "c1", ExecId: "e1", Process: ocispec.FromProcess(testbundle.Spec("/", "/bin/true").Process)},
			"WaitProcess", &agentpb.WaitProcessRequest{ContainerId: "c1", ExecId: "e1"},
			"ReadStdout", &agentpb.ReadStreamRequest{ContainerId: "c1", ExecId: "c1", Len: 1024},
			"SignalProcess", &agentpb.SignalProcessRequest{ContainerId: "c1", Signal: 9},
			"RemoveContainer", &agentpb.RemoveContainerRequest{ContainerId: "c1"},
		),
		"out_of_order": encodeCalls(
			"StartContainer", &agentpb.StartContainerRequest{ContainerId: "c1"},
			"CreateSandbox", sb,
			"ExecProcess", &agentpb.ExecProcessRequest{ContainerId: "c1", ExecId: "e1", Process: &agentpb.Process{Args: []string{"/bin/true"}}},
			"CreateContainer", &agentpb.CreateContainerRequest{ContainerId: "c1", OCI: spec("/bin/true")},
			"CreateContainer", &agentpb.CreateContainerRequest{ContainerId: "c1", OCI: spec("/bin/true")},
			"WaitProcess", &agentpb.WaitProcessRequest{ContainerId: "c1", ExecId: "nope"},
			"RemoveContainer", &agentpb.RemoveContainerRequest{ContainerId: "c1"},
			"RemoveContainer", &agentpb.RemoveContainerRequest{ContainerId: "c1"},
		),
		"bad_ids": encodeCalls(
			"CreateSandbox", sb,
			"CreateContainer", &agentpb.CreateContainerRequest{ContainerId: "../x", OCI: spec("/bin/true")},
			"CreateContainer", &agentpb.CreateContainerRequest{ContainerId: "a\x00b", OCI: spec("/bin/true")},
			"CreateContainer", &agentpb.CreateContainerRequest{ContainerId: "sandbox", OCI: spec("/bin/true")},
			"CreateContainer", &agentpb.CreateContainerRequest{ContainerId: "ünï", OCI: &agentpb.Spec{}},
		),
		"storages": encodeCalls(
			"CreateSandbox", &agentpb.CreateSandboxRequest{Storages: []*agentpb.Storage{
				{Driver: "ephemeral", Source: "tmpfs", Fstype: "tmpfs", MountPoint: "/sandbox/ephemeral/eph", Options: []string{"size=1M"}},
				{Driver: "local", Source: "local", Fstype: "local", MountPoint: "/sandbox/local/loc", Options: []string{"mode=0777"}},
			}},
			"UpdateEphemeralMounts", &agentpb.UpdateEphemeralMountsRequest{Storages: []*agentpb.Storage{{Driver: "ephemeral", Fstype: "tmpfs", MountPoint: "/sandbox/ephemeral/eph", Options: []string{"size=2M"}}}},
			"CreateContainer", &agentpb.CreateContainerRequest{ContainerId: "c2", OCI: spec("/bin/true"), Storages: []*agentpb.Storage{{Driver: "nosuchdriver", MountPoint: "/x"}}},
			"CreateContainer", &agentpb.CreateContainerRequest{ContainerId: "c3", OCI: spec("/bin/true"), Storages: []*agentpb.Storage{{Driver: "ephemeral", Fstype: "tmpfs", Source: "tmpfs", MountPoint: "/sandbox/ephemeral/y", Options: []string{"size=-1"}}}},
			"GetVolumeStats", &agentpb.VolumeStatsRequest{VolumeGuestPath: "/eph"},
			"RemoveStaleVirtiofsShareMounts", &agentpb.RemoveStaleVirtiofsShareMountsRequest{},
		),
		"copyfile": encodeCalls(
			"CopyFile", &agentpb.CopyFileRequest{Path: "/run/kata-containers/shared/containers/c1/x", FileSize: 3, FileMode: 0o644, Data: []byte("abc")},
			"CopyFile", &agentpb.CopyFileRequest{Path: "/run/kata-containers/shared/containers/../../../../etc/passwd", FileSize: 1, Data: []byte("x")},
			"CopyFile", &agentpb.CopyFileRequest{Path: "/run/kata-containers/shared/containers/big", FileSize: 1 << 40, Offset: 1 << 39, Data: []byte("x")},
		),
		"network": encodeCalls(
			"UpdateInterface", &agentpb.UpdateInterfaceRequest{Interface: &typespb.Interface{Name: "lo", Mtu: 1500, IPAddresses: []*typespb.IPAddress{{Address: "10.9.9.9", Mask: "24"}}}},
			"UpdateRoutes", &agentpb.UpdateRoutesRequest{Routes: &agentpb.Routes{Routes: []*typespb.Route{{Dest: "10.8.0.0/16", Device: "lo"}}}},
			"ListInterfaces", &agentpb.ListInterfacesRequest{},
			"ListRoutes", &agentpb.ListRoutesRequest{},
			"AddARPNeighbors", &agentpb.AddARPNeighborsRequest{Neighbors: &agentpb.ARPNeighbors{ARPNeighbors: []*typespb.ARPNeighbor{{ToIPAddress: &typespb.IPAddress{Address: "10.9.9.1"}, Device: "lo", Lladdr: "02:00:00:00:00:01"}}}},
			"GetIPTables", &agentpb.GetIPTablesRequest{},
		),
		"guest": encodeCalls(
			"GetGuestDetails", &agentpb.GuestDetailsRequest{MemBlockSize: true, MemHotplugProbe: true},
			"OnlineCPUMem", &agentpb.OnlineCPUMemRequest{NbCpus: 2},
			"MemHotplugByProbe", &agentpb.MemHotplugByProbeRequest{MemHotplugProbeAddr: []uint64{0x100000000}},
			"GetMetrics", &agentpb.GetMetricsRequest{},
			"GetOOMEvent", &agentpb.GetOOMEventRequest{},
			"GetDiagnosticData", &agentpb.GetDiagnosticDataRequest{},
		),
	}
}

// TestWriteSeedCorpus writes seeds() to testdata/fuzz/FuzzAgentService when
// WREN_WRITE_SEEDS=1 (after changing seeds or the method table).
func TestWriteSeedCorpus(t *testing.T) {
	if os.Getenv("WREN_WRITE_SEEDS") == "" {
		t.Skip("set WREN_WRITE_SEEDS=1 to rewrite the committed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzAgentService")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seeds() {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
