package ocispec

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"

	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	pb "github.com/wren-vm/wren/protocols/agentpb"
)

func p[T any](v T) *T { return &v }

func TestToSpec(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   *pb.Spec
		want *specs.Spec
	}{
		{name: "nil", in: nil, want: nil},
		{name: "empty", in: &pb.Spec{}, want: &specs.Spec{}},
		{
			name: "top level and process",
			in: &pb.Spec{
				Version:     "1.1.0",
				Hostname:    "h",
				Annotations: map[string]string{"a": "b"},
				Root:        &pb.Root{Path: "/r", Readonly: true},
				Mounts:      []*pb.Mount{{Destination: "/proc", Source: "proc", Type: "proc", Options: []string{"nosuid"}}},
				Process: &pb.Process{
					Terminal: true, ConsoleSize: &pb.Box{Height: 24, Width: 80},
					User: &pb.User{UID: 1, GID: 2, AdditionalGids: []uint32{3, 4}, Username: "u"},
					Args: []string{"sh", "-c", "x"}, Env: []string{"A=1"}, Cwd: "/w",
					Capabilities: &pb.LinuxCapabilities{Bounding: []string{"CAP_KILL"}, Effective: []string{"CAP_CHOWN"},
						Inheritable: []string{"CAP_A"}, Permitted: []string{"CAP_B"}, Ambient: []string{"CAP_C"}},
					Rlimits:         []*pb.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 10, Soft: 5}},
					NoNewPrivileges: true, ApparmorProfile: "aa", OOMScoreAdj: -500, SelinuxLabel: "sl",
				},
			},
			want: &specs.Spec{
				Version: "1.1.0", Hostname: "h", Annotations: map[string]string{"a": "b"},
				Root:   &specs.Root{Path: "/r", Readonly: true},
				Mounts: []specs.Mount{{Destination: "/proc", Source: "proc", Type: "proc", Options: []string{"nosuid"}}},
				Process: &specs.Process{
					Terminal: true, ConsoleSize: &specs.Box{Height: 24, Width: 80},
					User: specs.User{UID: 1, GID: 2, AdditionalGids: []uint32{3, 4}, Username: "u"},
					Args: []string{"sh", "-c", "x"}, Env: []string{"A=1"}, Cwd: "/w",
					Capabilities: &specs.LinuxCapabilities{Bounding: []string{"CAP_KILL"}, Effective: []string{"CAP_CHOWN"},
						Inheritable: []string{"CAP_A"}, Permitted: []string{"CAP_B"}, Ambient: []string{"CAP_C"}},
					Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 10, Soft: 5}},
					NoNewPrivileges: true, ApparmorProfile: "aa", OOMScoreAdj: p(-500), SelinuxLabel: "sl",
				},
			},
		},
		{
			name: "process without user keeps root and zero oom score",
			in:   &pb.Spec{Process: &pb.Process{Args: []string{"true"}}},
			want: &specs.Spec{Process: &specs.Process{Args: []string{"true"}, OOMScoreAdj: p(0)}},
		},
		{
			name: "hooks with and without timeout",
			in: &pb.Spec{Hooks: &pb.Hooks{
				Prestart:        []*pb.Hook{{Path: "/a", Args: []string{"a"}, Env: []string{"E=1"}, Timeout: 5}},
				CreateRuntime:   []*pb.Hook{{Path: "/b"}},
				CreateContainer: []*pb.Hook{{Path: "/c"}},
				StartContainer:  []*pb.Hook{{Path: "/d"}},
				Poststart:       []*pb.Hook{{Path: "/e"}},
				Poststop:        []*pb.Hook{{Path: "/f", Timeout: 1}},
			}},
			want: &specs.Spec{Hooks: &specs.Hooks{
				Prestart:        []specs.Hook{{Path: "/a", Args: []string{"a"}, Env: []string{"E=1"}, Timeout: p(5)}}, //nolint:staticcheck // still part of the wire API
				CreateRuntime:   []specs.Hook{{Path: "/b"}},
				CreateContainer: []specs.Hook{{Path: "/c"}},
				StartContainer:  []specs.Hook{{Path: "/d"}},
				Poststart:       []specs.Hook{{Path: "/e"}},
				Poststop:        []specs.Hook{{Path: "/f", Timeout: p(1)}},
			}},
		},
		{
			name: "linux section",
			in: &pb.Spec{Linux: &pb.Linux{
				UIDMappings: []*pb.LinuxIDMapping{{HostID: 1000, ContainerID: 0, Size: 10}},
				GIDMappings: []*pb.LinuxIDMapping{{HostID: 2000, ContainerID: 1, Size: 5}},
				Sysctl:      map[string]string{"net.ipv4.ip_forward": "1"},
				CgroupsPath: "/kubepods/x",
				Namespaces:  []*pb.LinuxNamespace{{Type: "pid"}, {Type: "network", Path: "/var/run/netns/x"}},
				Devices: []*pb.LinuxDevice{
					{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229, FileMode: 0o666, UID: 0, GID: 0},
					{Path: "/dev/x", Type: "b", Major: 8, Minor: 0, UID: 7, GID: 8},
				},
				RootfsPropagation: "rslave", MaskedPaths: []string{"/proc/kcore"}, ReadonlyPaths: []string{"/proc/sys"},
				MountLabel: "ml", IntelRdt: &pb.LinuxIntelRdt{L3CacheSchema: "L3:0=f"},
				Seccomp: &pb.LinuxSeccomp{
					DefaultAction: "SCMP_ACT_ERRNO", Architectures: []string{"SCMP_ARCH_X86_64"}, Flags: []string{"SECCOMP_FILTER_FLAG_LOG"},
					Syscalls: []*pb.LinuxSyscall{
						{Names: []string{"mkdir"}, Action: "SCMP_ACT_ERRNO", ErrnoRet: &pb.LinuxSyscall_Errnoret{Errnoret: 1},
							Args: []*pb.LinuxSeccompArg{{Index: 1, Value: 2, ValueTwo: 3, Op: "SCMP_CMP_EQ"}}},
						{Names: []string{"read"}, Action: "SCMP_ACT_ALLOW"},
					},
				},
			}},
			want: &specs.Spec{Linux: &specs.Linux{
				UIDMappings: []specs.LinuxIDMapping{{HostID: 1000, ContainerID: 0, Size: 10}},
				GIDMappings: []specs.LinuxIDMapping{{HostID: 2000, ContainerID: 1, Size: 5}},
				Sysctl:      map[string]string{"net.ipv4.ip_forward": "1"},
				CgroupsPath: "/kubepods/x",
				Namespaces:  []specs.LinuxNamespace{{Type: "pid"}, {Type: "network", Path: "/var/run/netns/x"}},
				Devices: []specs.LinuxDevice{
					{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229, FileMode: p(os.FileMode(0o666)), UID: p(uint32(0)), GID: p(uint32(0))},
					{Path: "/dev/x", Type: "b", Major: 8, Minor: 0, UID: p(uint32(7)), GID: p(uint32(8))},
				},
				RootfsPropagation: "rslave", MaskedPaths: []string{"/proc/kcore"}, ReadonlyPaths: []string{"/proc/sys"},
				MountLabel: "ml", IntelRdt: &specs.LinuxIntelRdt{L3CacheSchema: "L3:0=f"},
				Seccomp: &specs.LinuxSeccomp{
					DefaultAction: "SCMP_ACT_ERRNO", Architectures: []specs.Arch{"SCMP_ARCH_X86_64"}, Flags: []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_LOG"},
					Syscalls: []specs.LinuxSyscall{
						{Names: []string{"mkdir"}, Action: "SCMP_ACT_ERRNO", ErrnoRet: p(uint(1)),
							Args: []specs.LinuxSeccompArg{{Index: 1, Value: 2, ValueTwo: 3, Op: "SCMP_CMP_EQ"}}},
						{Names: []string{"read"}, Action: "SCMP_ACT_ALLOW"},
					},
				},
			}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ToSpec(tc.in)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ToSpec:\n got %s\nwant %s", js(got), js(tc.want))
			}
		})
	}
}

func TestToResources(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   *pb.LinuxResources
		want *specs.LinuxResources
	}{
		{name: "nil", in: nil, want: nil},
		{
			name: "zero means unset",
			in:   &pb.LinuxResources{Memory: &pb.LinuxMemory{}, CPU: &pb.LinuxCPU{}, Pids: &pb.LinuxPids{}, BlockIO: &pb.LinuxBlockIO{}, Network: &pb.LinuxNetwork{}},
			want: &specs.LinuxResources{Memory: &specs.LinuxMemory{}, CPU: &specs.LinuxCPU{}, Pids: &specs.LinuxPids{}, BlockIO: &specs.LinuxBlockIO{}, Network: &specs.LinuxNetwork{}},
		},
		{
			name: "all set",
			in: &pb.LinuxResources{
				Devices: []*pb.LinuxDeviceCgroup{{Allow: false, Access: "rwm", Major: -1, Minor: -1}, {Allow: true, Type: "c", Major: 1, Minor: 3, Access: "rw"}},
				Memory:  &pb.LinuxMemory{Limit: 100, Reservation: 50, Swap: 200, Kernel: 7, KernelTCP: 8, Swappiness: 60, DisableOOMKiller: true},
				CPU:     &pb.LinuxCPU{Shares: 1024, Quota: 50000, Period: 100000, RealtimeRuntime: 9, RealtimePeriod: 10, Cpus: "0-1", Mems: "0"},
				Pids:    &pb.LinuxPids{Limit: 64},
				BlockIO: &pb.LinuxBlockIO{Weight: 500, LeafWeight: 300,
					WeightDevice:            []*pb.LinuxWeightDevice{{Major: 8, Minor: 0, Weight: 100, LeafWeight: 0}},
					ThrottleReadBpsDevice:   []*pb.LinuxThrottleDevice{{Major: 8, Minor: 0, Rate: 1}},
					ThrottleWriteBpsDevice:  []*pb.LinuxThrottleDevice{{Major: 8, Minor: 1, Rate: 2}},
					ThrottleReadIOPSDevice:  []*pb.LinuxThrottleDevice{{Major: 8, Minor: 2, Rate: 3}},
					ThrottleWriteIOPSDevice: []*pb.LinuxThrottleDevice{{Major: 8, Minor: 3, Rate: 4}}},
				HugepageLimits: []*pb.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 4 << 20}},
				Network:        &pb.LinuxNetwork{ClassID: 7, Priorities: []*pb.LinuxInterfacePriority{{Name: "eth0", Priority: 2}}},
			},
			want: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}, {Allow: true, Type: "c", Major: p(int64(1)), Minor: p(int64(3)), Access: "rw"}},
				Memory: &specs.LinuxMemory{Limit: p(int64(100)), Reservation: p(int64(50)), Swap: p(int64(200)), Kernel: p(int64(7)), //nolint:staticcheck // still part of the wire API
					KernelTCP: p(int64(8)), Swappiness: p(uint64(60)), DisableOOMKiller: p(true)},
				CPU: &specs.LinuxCPU{Shares: p(uint64(1024)), Quota: p(int64(50000)), Period: p(uint64(100000)),
					RealtimeRuntime: p(int64(9)), RealtimePeriod: p(uint64(10)), Cpus: "0-1", Mems: "0"},
				Pids: &specs.LinuxPids{Limit: p(int64(64))},
				BlockIO: &specs.LinuxBlockIO{Weight: p(uint16(500)), LeafWeight: p(uint16(300)),
					WeightDevice:            []specs.LinuxWeightDevice{{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 8, Minor: 0}, Weight: p(uint16(100))}},
					ThrottleReadBpsDevice:   []specs.LinuxThrottleDevice{{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 8, Minor: 0}, Rate: 1}},
					ThrottleWriteBpsDevice:  []specs.LinuxThrottleDevice{{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 8, Minor: 1}, Rate: 2}},
					ThrottleReadIOPSDevice:  []specs.LinuxThrottleDevice{{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 8, Minor: 2}, Rate: 3}},
					ThrottleWriteIOPSDevice: []specs.LinuxThrottleDevice{{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 8, Minor: 3}, Rate: 4}}},
				HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 4 << 20}},
				Network:        &specs.LinuxNetwork{ClassID: p(uint32(7)), Priorities: []specs.LinuxInterfacePriority{{Name: "eth0", Priority: 2}}},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ToResources(tc.in); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ToResources:\n got %s\nwant %s", js(got), js(tc.want))
			}
		})
	}
}

// runc's default spec survives the trip through the wire form, and the
// protobuf survives a marshal round trip.
func TestRoundTripRuncDefaultSpec(t *testing.T) {
	s := specconv.Example()
	limit, shares := int64(64<<20), uint64(512)
	s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &limit}
	s.Linux.Resources.CPU = &specs.LinuxCPU{Shares: &shares, Cpus: "0"}
	s.Process.OOMScoreAdj = p(100)
	wire := FromSpec(s)
	b, err := proto.Marshal(wire)
	if err != nil {
		t.Fatal(err)
	}
	var back pb.Spec
	if err := proto.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	got := ToSpec(&back)
	if !reflect.DeepEqual(got, s) {
		t.Errorf("round trip differs:\n got %s\nwant %s", js(got), js(s))
	}
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
