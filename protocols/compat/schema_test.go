package compat

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/wren-vm/wren/protocols/agentpb"
	"github.com/wren-vm/wren/protocols/typespb"
)

// The tables below restate the Kata agent API field by field, written from
// Kata's protos rather than from ours, so that an edit of protocols/protos
// that changes the wire (a renumbered field, a changed type or cardinality,
// a renamed method or message, a lost enum value) fails here. Field lines
// are "<number> <name> <type>"; the type is the proto scalar kind, the full
// name of a message or enum, "map<K,V>", and carries a "repeated ",
// "optional " or "oneof <name> " prefix where that applies. Field names do
// not travel in the binary encoding, but Kata's JSON-speaking tools use them,
// so they are pinned too.

type method struct{ name, in, out string }

var wantServices = map[string][]method{
	"grpc.AgentService": {
		{"CreateContainer", "grpc.CreateContainerRequest", "google.protobuf.Empty"},
		{"StartContainer", "grpc.StartContainerRequest", "google.protobuf.Empty"},
		{"RemoveContainer", "grpc.RemoveContainerRequest", "google.protobuf.Empty"},
		{"ExecProcess", "grpc.ExecProcessRequest", "google.protobuf.Empty"},
		{"SignalProcess", "grpc.SignalProcessRequest", "google.protobuf.Empty"},
		{"WaitProcess", "grpc.WaitProcessRequest", "grpc.WaitProcessResponse"},
		{"UpdateContainer", "grpc.UpdateContainerRequest", "google.protobuf.Empty"},
		{"UpdateEphemeralMounts", "grpc.UpdateEphemeralMountsRequest", "google.protobuf.Empty"},
		{"StatsContainer", "grpc.StatsContainerRequest", "grpc.StatsContainerResponse"},
		{"PauseContainer", "grpc.PauseContainerRequest", "google.protobuf.Empty"},
		{"ResumeContainer", "grpc.ResumeContainerRequest", "google.protobuf.Empty"},
		{"RemoveStaleVirtiofsShareMounts", "grpc.RemoveStaleVirtiofsShareMountsRequest", "google.protobuf.Empty"},
		{"GetDiagnosticData", "grpc.GetDiagnosticDataRequest", "grpc.GetDiagnosticDataResponse"},
		{"WriteStdin", "grpc.WriteStreamRequest", "grpc.WriteStreamResponse"},
		{"ReadStdout", "grpc.ReadStreamRequest", "grpc.ReadStreamResponse"},
		{"ReadStderr", "grpc.ReadStreamRequest", "grpc.ReadStreamResponse"},
		{"CloseStdin", "grpc.CloseStdinRequest", "google.protobuf.Empty"},
		{"TtyWinResize", "grpc.TtyWinResizeRequest", "google.protobuf.Empty"},
		{"UpdateInterface", "grpc.UpdateInterfaceRequest", "types.Interface"},
		{"UpdateRoutes", "grpc.UpdateRoutesRequest", "grpc.Routes"},
		{"ListInterfaces", "grpc.ListInterfacesRequest", "grpc.Interfaces"},
		{"ListRoutes", "grpc.ListRoutesRequest", "grpc.Routes"},
		{"AddARPNeighbors", "grpc.AddARPNeighborsRequest", "google.protobuf.Empty"},
		{"GetIPTables", "grpc.GetIPTablesRequest", "grpc.GetIPTablesResponse"},
		{"SetIPTables", "grpc.SetIPTablesRequest", "grpc.SetIPTablesResponse"},
		{"GetMetrics", "grpc.GetMetricsRequest", "grpc.Metrics"},
		{"MemAgentMemcgSet", "grpc.MemAgentMemcgConfig", "google.protobuf.Empty"},
		{"MemAgentCompactSet", "grpc.MemAgentCompactConfig", "google.protobuf.Empty"},
		{"CreateSandbox", "grpc.CreateSandboxRequest", "google.protobuf.Empty"},
		{"DestroySandbox", "grpc.DestroySandboxRequest", "google.protobuf.Empty"},
		{"OnlineCPUMem", "grpc.OnlineCPUMemRequest", "google.protobuf.Empty"},
		{"ReseedRandomDev", "grpc.ReseedRandomDevRequest", "google.protobuf.Empty"},
		{"GetGuestDetails", "grpc.GuestDetailsRequest", "grpc.GuestDetailsResponse"},
		{"MemHotplugByProbe", "grpc.MemHotplugByProbeRequest", "google.protobuf.Empty"},
		{"SetGuestDateTime", "grpc.SetGuestDateTimeRequest", "google.protobuf.Empty"},
		{"CopyFile", "grpc.CopyFileRequest", "google.protobuf.Empty"},
		{"GetOOMEvent", "grpc.GetOOMEventRequest", "grpc.OOMEvent"},
		{"AddSwap", "grpc.AddSwapRequest", "google.protobuf.Empty"},
		{"AddSwapPath", "grpc.AddSwapPathRequest", "google.protobuf.Empty"},
		{"GetVolumeStats", "grpc.VolumeStatsRequest", "grpc.VolumeStatsResponse"},
		{"ResizeVolume", "grpc.ResizeVolumeRequest", "google.protobuf.Empty"},
		{"SetPolicy", "grpc.SetPolicyRequest", "google.protobuf.Empty"},
	},
	"grpc.Health": {
		{"Check", "grpc.CheckRequest", "grpc.HealthCheckResponse"},
		{"Version", "grpc.CheckRequest", "grpc.VersionCheckResponse"},
	},
}

var wantEnums = map[string][]string{
	"types.IPFamily":                         {"0 v4", "1 v6"},
	"types.FSGroupChangePolicy":              {"0 Always", "1 OnRootMismatch"},
	"grpc.HealthCheckResponse.ServingStatus": {"0 UNKNOWN", "1 SERVING", "2 NOT_SERVING"},
	"grpc.VolumeUsage.Unit":                  {"0 UNKNOWN", "1 BYTES", "2 INODES"},
}

var wantMessages = map[string][]string{
	// agent.proto: containers and processes.
	"grpc.CreateContainerRequest": {
		"1 container_id string", "2 exec_id string", "3 string_user grpc.StringUser",
		"4 devices repeated grpc.Device", "5 storages repeated grpc.Storage", "6 OCI grpc.Spec",
		"7 sandbox_pidns bool", "8 shared_mounts repeated grpc.SharedMount",
		"9 stdin_port uint32", "10 stdout_port uint32", "11 stderr_port uint32",
	},
	"grpc.StartContainerRequest":  {"1 container_id string"},
	"grpc.RemoveContainerRequest": {"1 container_id string", "2 timeout uint32"},
	"grpc.ExecProcessRequest": {
		"1 container_id string", "2 exec_id string", "3 string_user grpc.StringUser", "4 process grpc.Process",
		"5 stdin_port uint32", "6 stdout_port uint32", "7 stderr_port uint32",
	},
	"grpc.SignalProcessRequest":   {"1 container_id string", "2 exec_id string", "3 signal uint32"},
	"grpc.WaitProcessRequest":     {"1 container_id string", "2 exec_id string"},
	"grpc.WaitProcessResponse":    {"1 status int32"},
	"grpc.UpdateContainerRequest": {"1 container_id string", "2 resources grpc.LinuxResources"},
	"grpc.StatsContainerRequest":  {"1 container_id string"},
	"grpc.PauseContainerRequest":  {"1 container_id string"},
	"grpc.ResumeContainerRequest": {"1 container_id string"},
	"grpc.CpuUsage": {
		"1 total_usage uint64", "2 percpu_usage repeated uint64",
		"3 usage_in_kernelmode uint64", "4 usage_in_usermode uint64",
	},
	"grpc.ThrottlingData": {"1 periods uint64", "2 throttled_periods uint64", "3 throttled_time uint64"},
	"grpc.CpuStats":       {"1 cpu_usage grpc.CpuUsage", "2 throttling_data grpc.ThrottlingData"},
	"grpc.PidsStats":      {"1 current uint64", "2 limit uint64"},
	"grpc.MemoryData":     {"1 usage uint64", "2 max_usage uint64", "3 failcnt uint64", "4 limit uint64"},
	"grpc.MemoryStats": {
		"1 cache uint64", "2 usage grpc.MemoryData", "3 swap_usage grpc.MemoryData",
		"4 kernel_usage grpc.MemoryData", "5 use_hierarchy bool", "6 stats map<string,uint64>",
	},
	"grpc.BlkioStatsEntry": {"1 major uint64", "2 minor uint64", "3 op string", "4 value uint64"},
	"grpc.BlkioStats": {
		"1 io_service_bytes_recursive repeated grpc.BlkioStatsEntry",
		"2 io_serviced_recursive repeated grpc.BlkioStatsEntry",
		"3 io_queued_recursive repeated grpc.BlkioStatsEntry",
		"4 io_service_time_recursive repeated grpc.BlkioStatsEntry",
		"5 io_wait_time_recursive repeated grpc.BlkioStatsEntry",
		"6 io_merged_recursive repeated grpc.BlkioStatsEntry",
		"7 io_time_recursive repeated grpc.BlkioStatsEntry",
		"8 sectors_recursive repeated grpc.BlkioStatsEntry",
	},
	"grpc.HugetlbStats": {"1 usage uint64", "2 max_usage uint64", "3 failcnt uint64"},
	"grpc.CgroupStats": {
		"1 cpu_stats grpc.CpuStats", "2 memory_stats grpc.MemoryStats", "3 pids_stats grpc.PidsStats",
		"4 blkio_stats grpc.BlkioStats", "5 hugetlb_stats map<string,grpc.HugetlbStats>",
	},
	"grpc.NetworkStats": {
		"1 name string", "2 rx_bytes uint64", "3 rx_packets uint64", "4 rx_errors uint64", "5 rx_dropped uint64",
		"6 tx_bytes uint64", "7 tx_packets uint64", "8 tx_errors uint64", "9 tx_dropped uint64",
	},
	"grpc.StatsContainerResponse": {"1 cgroup_stats grpc.CgroupStats", "2 network_stats repeated grpc.NetworkStats"},

	// agent.proto: stdio.
	"grpc.WriteStreamRequest":  {"1 container_id string", "2 exec_id string", "3 data bytes"},
	"grpc.WriteStreamResponse": {"1 len uint32"},
	"grpc.ReadStreamRequest":   {"1 container_id string", "2 exec_id string", "3 len uint32"},
	"grpc.ReadStreamResponse":  {"1 data bytes"},
	"grpc.CloseStdinRequest":   {"1 container_id string", "2 exec_id string"},
	"grpc.TtyWinResizeRequest": {"1 container_id string", "2 exec_id string", "3 row uint32", "4 column uint32"},

	// agent.proto: sandbox, network, guest.
	"grpc.KernelModule": {"1 name string", "2 parameters repeated string"},
	"grpc.CreateSandboxRequest": {
		"1 hostname string", "2 dns repeated string", "3 storages repeated grpc.Storage",
		"4 sandbox_pidns bool", "5 sandbox_id string", "6 guest_hook_path string",
		"7 kernel_modules repeated grpc.KernelModule",
	},
	"grpc.DestroySandboxRequest":                 {},
	"grpc.RemoveStaleVirtiofsShareMountsRequest": {},
	"grpc.Interfaces":                            {"1 Interfaces repeated types.Interface"},
	"grpc.Routes":                                {"1 Routes repeated types.Route"},
	"grpc.UpdateInterfaceRequest":                {"1 interface types.Interface"},
	"grpc.UpdateRoutesRequest":                   {"1 routes grpc.Routes"},
	"grpc.UpdateEphemeralMountsRequest":          {"1 storages repeated grpc.Storage"},
	"grpc.ListInterfacesRequest":                 {},
	"grpc.ListRoutesRequest":                     {},
	"grpc.ARPNeighbors":                          {"1 ARPNeighbors repeated types.ARPNeighbor"},
	"grpc.AddARPNeighborsRequest":                {"1 neighbors grpc.ARPNeighbors"},
	"grpc.GetIPTablesRequest":                    {"1 is_ipv6 bool"},
	"grpc.GetIPTablesResponse":                   {"1 data bytes"},
	"grpc.SetIPTablesRequest":                    {"1 is_ipv6 bool", "2 data bytes"},
	"grpc.SetIPTablesResponse":                   {"1 data bytes"},
	"grpc.OnlineCPUMemRequest":                   {"1 wait bool", "2 nb_cpus uint32", "3 cpu_only bool"},
	"grpc.ReseedRandomDevRequest":                {"2 data bytes"},
	"grpc.AgentDetails": {
		"1 version string", "2 init_daemon bool", "3 device_handlers repeated string",
		"4 storage_handlers repeated string", "5 supports_seccomp bool", "6 extra_features repeated string",
	},
	"grpc.GuestDetailsRequest": {"1 mem_block_size bool", "2 mem_hotplug_probe bool"},
	"grpc.GuestDetailsResponse": {
		"1 mem_block_size_bytes uint64", "2 agent_details grpc.AgentDetails", "3 support_mem_hotplug_probe bool",
	},
	"grpc.MemHotplugByProbeRequest": {"1 memHotplugProbeAddr repeated uint64"},
	"grpc.SetGuestDateTimeRequest":  {"1 Sec int64", "2 Usec int64"},
	"grpc.FSGroup":                  {"2 group_id uint32", "3 group_change_policy types.FSGroupChangePolicy"},
	"grpc.SharedMount": {
		"1 name string", "2 src_ctr string", "3 src_path string", "4 dst_ctr string", "5 dst_path string",
	},
	"grpc.Storage": {
		"1 driver string", "2 driver_options repeated string", "3 source string", "4 fstype string",
		"5 options repeated string", "6 mount_point string", "7 fs_group grpc.FSGroup", "8 shared bool",
	},
	"grpc.Device": {
		"1 id string", "2 type string", "3 vm_path string", "4 container_path string", "5 options repeated string",
	},
	"grpc.StringUser": {"1 uid string", "2 gid string", "3 additionalGids repeated string"},
	"grpc.CopyFileRequest": {
		"1 path string", "2 file_size int64", "3 file_mode uint32", "4 dir_mode uint32",
		"5 uid int32", "6 gid int32", "7 offset int64", "8 data bytes",
	},
	"grpc.GetOOMEventRequest":        {},
	"grpc.OOMEvent":                  {"1 container_id string"},
	"grpc.AddSwapRequest":            {"1 PCIPath repeated uint32"},
	"grpc.AddSwapPathRequest":        {"1 path string"},
	"grpc.GetMetricsRequest":         {},
	"grpc.Metrics":                   {"1 metrics string"},
	"grpc.VolumeStatsRequest":        {"1 volume_guest_path string"},
	"grpc.ResizeVolumeRequest":       {"1 volume_guest_path string", "2 size uint64"},
	"grpc.SetPolicyRequest":          {"1 policy string"},
	"grpc.GetDiagnosticDataRequest":  {"1 log_type string", "2 container_id string"},
	"grpc.GetDiagnosticDataResponse": {"1 data string"},
	"grpc.MemAgentMemcgConfig": {
		"1 disabled optional bool", "2 swap optional bool", "3 swappiness_max optional uint32",
		"4 period_secs optional uint64", "5 period_psi_percent_limit optional uint32",
		"6 eviction_psi_percent_limit optional uint32", "7 eviction_run_aging_count_min optional uint64",
	},
	"grpc.MemAgentCompactConfig": {
		"1 disabled optional bool", "2 period_secs optional uint64", "3 period_psi_percent_limit optional uint32",
		"4 compact_psi_percent_limit optional uint32", "5 compact_sec_max optional int64",
		"6 compact_order optional uint32", "7 compact_threshold optional uint64", "8 compact_force_times optional uint64",
	},

	// health.proto.
	"grpc.CheckRequest":         {"1 service string"},
	"grpc.HealthCheckResponse":  {"1 status grpc.HealthCheckResponse.ServingStatus"},
	"grpc.VersionCheckResponse": {"1 grpc_version string", "2 agent_version string"},

	// csi.proto.
	"grpc.VolumeStatsResponse": {"1 usage repeated grpc.VolumeUsage", "2 volume_condition grpc.VolumeCondition"},
	"grpc.VolumeUsage":         {"1 available uint64", "2 total uint64", "3 used uint64", "4 unit grpc.VolumeUsage.Unit"},
	"grpc.VolumeCondition":     {"1 abnormal bool", "2 message string"},

	// types.proto.
	"types.IPAddress": {"1 family types.IPFamily", "2 address string", "3 mask string"},
	"types.Interface": {
		"1 device string", "2 name string", "3 IPAddresses repeated types.IPAddress", "4 mtu uint64",
		"5 hwAddr string", "6 devicePath string", "7 type string", "8 raw_flags uint32",
	},
	"types.Route": {
		"1 dest string", "2 gateway string", "3 device string", "4 source string",
		"5 scope uint32", "6 family types.IPFamily", "7 flags uint32", "8 mtu uint32",
	},
	"types.ARPNeighbor": {
		"1 toIPAddress types.IPAddress", "2 device string", "3 lladdr string", "4 state int32", "5 flags int32",
	},

	// oci.proto.
	"grpc.Spec": {
		"1 Version string", "2 Process grpc.Process", "3 Root grpc.Root", "4 Hostname string",
		"5 Mounts repeated grpc.Mount", "6 Hooks grpc.Hooks", "7 Annotations map<string,string>",
		"8 Linux grpc.Linux", "9 Solaris grpc.Solaris", "10 Windows grpc.Windows",
	},
	"grpc.Process": {
		"1 Terminal bool", "2 ConsoleSize grpc.Box", "3 User grpc.User", "4 Args repeated string",
		"5 Env repeated string", "6 Cwd string", "7 Capabilities grpc.LinuxCapabilities",
		"8 Rlimits repeated grpc.POSIXRlimit", "9 NoNewPrivileges bool", "10 ApparmorProfile string",
		"11 OOMScoreAdj int64", "12 SelinuxLabel string",
	},
	"grpc.Box":  {"1 Height uint32", "2 Width uint32"},
	"grpc.User": {"1 UID uint32", "2 GID uint32", "3 AdditionalGids repeated uint32", "4 Username string"},
	"grpc.LinuxCapabilities": {
		"1 Bounding repeated string", "2 Effective repeated string", "3 Inheritable repeated string",
		"4 Permitted repeated string", "5 Ambient repeated string",
	},
	"grpc.POSIXRlimit": {"1 Type string", "2 Hard uint64", "3 Soft uint64"},
	"grpc.Mount":       {"1 destination string", "2 source string", "3 type string", "4 options repeated string"},
	"grpc.Root":        {"1 Path string", "2 Readonly bool"},
	"grpc.Hooks": {
		"1 Prestart repeated grpc.Hook", "2 Poststart repeated grpc.Hook", "3 Poststop repeated grpc.Hook",
		"4 CreateRuntime repeated grpc.Hook", "5 CreateContainer repeated grpc.Hook", "6 StartContainer repeated grpc.Hook",
	},
	"grpc.Hook": {"1 Path string", "2 Args repeated string", "3 Env repeated string", "4 Timeout int64"},
	"grpc.Linux": {
		"1 UIDMappings repeated grpc.LinuxIDMapping", "2 GIDMappings repeated grpc.LinuxIDMapping",
		"3 Sysctl map<string,string>", "4 Resources grpc.LinuxResources", "5 CgroupsPath string",
		"6 Namespaces repeated grpc.LinuxNamespace", "7 Devices repeated grpc.LinuxDevice",
		"8 Seccomp grpc.LinuxSeccomp", "9 RootfsPropagation string", "10 MaskedPaths repeated string",
		"11 ReadonlyPaths repeated string", "12 MountLabel string", "13 IntelRdt grpc.LinuxIntelRdt",
	},
	"grpc.Windows":        {"1 dummy string"},
	"grpc.Solaris":        {"1 dummy string"},
	"grpc.LinuxIDMapping": {"1 HostID uint32", "2 ContainerID uint32", "3 Size uint32"},
	"grpc.LinuxNamespace": {"1 Type string", "2 Path string"},
	"grpc.LinuxDevice": {
		"1 Path string", "2 Type string", "3 Major int64", "4 Minor int64",
		"5 FileMode uint32", "6 UID uint32", "7 GID uint32",
	},
	"grpc.LinuxResources": {
		"1 Devices repeated grpc.LinuxDeviceCgroup", "2 Memory grpc.LinuxMemory", "3 CPU grpc.LinuxCPU",
		"4 Pids grpc.LinuxPids", "5 BlockIO grpc.LinuxBlockIO", "6 HugepageLimits repeated grpc.LinuxHugepageLimit",
		"7 Network grpc.LinuxNetwork",
	},
	"grpc.LinuxMemory": {
		"1 Limit int64", "2 Reservation int64", "3 Swap int64", "4 Kernel int64",
		"5 KernelTCP int64", "6 Swappiness uint64", "7 DisableOOMKiller bool",
	},
	"grpc.LinuxCPU": {
		"1 Shares uint64", "2 Quota int64", "3 Period uint64", "4 RealtimeRuntime int64",
		"5 RealtimePeriod uint64", "6 Cpus string", "7 Mems string",
	},
	"grpc.LinuxWeightDevice":   {"1 Major int64", "2 Minor int64", "3 Weight uint32", "4 LeafWeight uint32"},
	"grpc.LinuxThrottleDevice": {"1 Major int64", "2 Minor int64", "3 Rate uint64"},
	"grpc.LinuxBlockIO": {
		"1 Weight uint32", "2 LeafWeight uint32", "3 WeightDevice repeated grpc.LinuxWeightDevice",
		"4 ThrottleReadBpsDevice repeated grpc.LinuxThrottleDevice",
		"5 ThrottleWriteBpsDevice repeated grpc.LinuxThrottleDevice",
		"6 ThrottleReadIOPSDevice repeated grpc.LinuxThrottleDevice",
		"7 ThrottleWriteIOPSDevice repeated grpc.LinuxThrottleDevice",
	},
	"grpc.LinuxPids": {"1 Limit int64"},
	"grpc.LinuxDeviceCgroup": {
		"1 Allow bool", "2 Type string", "3 Major int64", "4 Minor int64", "5 Access string",
	},
	"grpc.LinuxNetwork":           {"1 ClassID uint32", "2 Priorities repeated grpc.LinuxInterfacePriority"},
	"grpc.LinuxHugepageLimit":     {"1 Pagesize string", "2 Limit uint64"},
	"grpc.LinuxInterfacePriority": {"1 Name string", "2 Priority uint32"},
	"grpc.LinuxSeccomp": {
		"1 DefaultAction string", "2 Architectures repeated string", "3 Flags repeated string",
		"4 Syscalls repeated grpc.LinuxSyscall",
	},
	"grpc.LinuxSeccompArg": {"1 Index uint64", "2 Value uint64", "3 ValueTwo uint64", "4 Op string"},
	"grpc.LinuxSyscall": {
		"1 Names repeated string", "2 Action string", "3 errnoret oneof ErrnoRet uint32",
		"4 Args repeated grpc.LinuxSeccompArg",
	},
	"grpc.LinuxIntelRdt": {"1 L3CacheSchema string"},
}

// ourFiles are the descriptors the generated packages register.
func ourFiles() []protoreflect.FileDescriptor {
	return []protoreflect.FileDescriptor{
		agentpb.File_wren_protocols_agent_proto,
		agentpb.File_wren_protocols_health_proto,
		agentpb.File_wren_protocols_oci_proto,
		agentpb.File_wren_protocols_csi_proto,
		typespb.File_wren_protocols_types_proto,
	}
}

// typeSig renders a field's type the way the tables above spell it.
func typeSig(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return string(fd.Message().FullName())
	case protoreflect.EnumKind:
		return string(fd.Enum().FullName())
	default:
		return fd.Kind().String()
	}
}

func fieldSig(fd protoreflect.FieldDescriptor) string {
	var typ string
	switch {
	case fd.IsMap():
		typ = fmt.Sprintf("map<%s,%s>", typeSig(fd.MapKey()), typeSig(fd.MapValue()))
	case fd.Cardinality() == protoreflect.Repeated:
		typ = "repeated " + typeSig(fd)
	case fd.HasOptionalKeyword():
		typ = "optional " + typeSig(fd)
	case fd.ContainingOneof() != nil:
		typ = "oneof " + string(fd.ContainingOneof().Name()) + " " + typeSig(fd)
	default:
		typ = typeSig(fd)
	}
	return fmt.Sprintf("%d %s %s", fd.Number(), fd.Name(), typ)
}

// collect walks every message and enum declared in files, nested ones
// included, except the entry messages protoc synthesises for map fields.
func collect(files []protoreflect.FileDescriptor) (map[string]protoreflect.MessageDescriptor, map[string]protoreflect.EnumDescriptor) {
	msgs := map[string]protoreflect.MessageDescriptor{}
	enums := map[string]protoreflect.EnumDescriptor{}
	walkEnums := func(eds protoreflect.EnumDescriptors) {
		for i := 0; i < eds.Len(); i++ {
			enums[string(eds.Get(i).FullName())] = eds.Get(i)
		}
	}
	var walkMsgs func(protoreflect.MessageDescriptors)
	walkMsgs = func(mds protoreflect.MessageDescriptors) {
		for i := 0; i < mds.Len(); i++ {
			md := mds.Get(i)
			if md.IsMapEntry() {
				continue
			}
			msgs[string(md.FullName())] = md
			walkEnums(md.Enums())
			walkMsgs(md.Messages())
		}
	}
	for _, f := range files {
		walkEnums(f.Enums())
		walkMsgs(f.Messages())
	}
	return msgs, enums
}

func TestProtoPackages(t *testing.T) {
	want := map[protoreflect.FileDescriptor]protoreflect.FullName{
		agentpb.File_wren_protocols_agent_proto:  "grpc",
		agentpb.File_wren_protocols_health_proto: "grpc",
		agentpb.File_wren_protocols_oci_proto:    "grpc",
		agentpb.File_wren_protocols_csi_proto:    "grpc",
		typespb.File_wren_protocols_types_proto:  "types",
	}
	for f, pkg := range want {
		if f.Package() != pkg {
			t.Errorf("%s: package %q, want %q", f.Path(), f.Package(), pkg)
		}
		if f.Syntax() != protoreflect.Proto3 {
			t.Errorf("%s: syntax %v, want proto3", f.Path(), f.Syntax())
		}
	}
}

func TestServices(t *testing.T) {
	got := map[string]protoreflect.ServiceDescriptor{}
	for _, f := range ourFiles() {
		for i := 0; i < f.Services().Len(); i++ {
			sd := f.Services().Get(i)
			got[string(sd.FullName())] = sd
		}
	}
	for name := range got {
		if _, ok := wantServices[name]; !ok {
			t.Errorf("unexpected service %s", name)
		}
	}
	for name, methods := range wantServices {
		sd, ok := got[name]
		if !ok {
			t.Errorf("service %s missing", name)
			continue
		}
		var want, have []string
		for _, m := range methods {
			want = append(want, fmt.Sprintf("%s(%s) %s", m.name, m.in, m.out))
		}
		for i := 0; i < sd.Methods().Len(); i++ {
			md := sd.Methods().Get(i)
			if md.IsStreamingClient() || md.IsStreamingServer() {
				t.Errorf("%s/%s: streaming methods do not exist in the Kata API", name, md.Name())
			}
			have = append(have, fmt.Sprintf("%s(%s) %s", md.Name(), md.Input().FullName(), md.Output().FullName()))
		}
		diff(t, name, want, have)
	}
	if n := len(wantServices["grpc.AgentService"]); n != 42 {
		t.Errorf("table lists %d AgentService methods; Kata 3.29+/4.x has 42", n)
	}
}

func TestMessages(t *testing.T) {
	msgs, _ := collect(ourFiles())
	for name := range msgs {
		if _, ok := wantMessages[name]; !ok {
			t.Errorf("message %s is not in the compatibility table", name)
		}
	}
	for name, fields := range wantMessages {
		md, ok := msgs[name]
		if !ok {
			t.Errorf("message %s missing", name)
			continue
		}
		var have []string
		for i := 0; i < md.Fields().Len(); i++ {
			have = append(have, fieldSig(md.Fields().Get(i)))
		}
		diff(t, name, fields, have)
	}
}

func TestEnums(t *testing.T) {
	_, enums := collect(ourFiles())
	for name := range enums {
		if _, ok := wantEnums[name]; !ok {
			t.Errorf("enum %s is not in the compatibility table", name)
		}
	}
	for name, values := range wantEnums {
		ed, ok := enums[name]
		if !ok {
			t.Errorf("enum %s missing", name)
			continue
		}
		var have []string
		for i := 0; i < ed.Values().Len(); i++ {
			v := ed.Values().Get(i)
			have = append(have, fmt.Sprintf("%d %s", v.Number(), v.Name()))
		}
		diff(t, name, values, have)
	}
}

// diff reports what want has that have lacks and the reverse, ignoring order.
func diff(t *testing.T, what string, want, have []string) {
	t.Helper()
	w, h := slices.Clone(want), slices.Clone(have)
	sort.Strings(w)
	sort.Strings(h)
	var missing, extra []string
	for _, s := range w {
		if !slices.Contains(h, s) {
			missing = append(missing, s)
		}
	}
	for _, s := range h {
		if !slices.Contains(w, s) {
			extra = append(extra, s)
		}
	}
	if len(missing) > 0 || len(extra) > 0 {
		t.Errorf("%s differs from Kata:\n  missing: %s\n  unexpected: %s",
			what, strings.Join(missing, "; "), strings.Join(extra, "; "))
	}
}
