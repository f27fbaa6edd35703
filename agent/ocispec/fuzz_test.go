package ocispec

import (
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/wren-vm/wren/protocols/agentpb"
)

// Any Spec a host can send converts without panicking, and converting the
// result back and forth again is stable.
func FuzzToSpec(f *testing.F) {
	seed, _ := proto.Marshal(&pb.Spec{
		Process: &pb.Process{Args: []string{"sh"}, User: &pb.User{UID: 1}},
		Root:    &pb.Root{Path: "/r"},
		Linux: &pb.Linux{
			Resources:  &pb.LinuxResources{Memory: &pb.LinuxMemory{Limit: 1}, Devices: []*pb.LinuxDeviceCgroup{{Major: -1}}},
			Seccomp:    &pb.LinuxSeccomp{Syscalls: []*pb.LinuxSyscall{{ErrnoRet: &pb.LinuxSyscall_Errnoret{Errnoret: 1}}}},
			Namespaces: []*pb.LinuxNamespace{{Type: "pid"}},
		},
	})
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		var in pb.Spec
		if err := proto.Unmarshal(data, &in); err != nil {
			return
		}
		once := ToSpec(&in)
		twice := ToSpec(FromSpec(once))
		b1, _ := proto.Marshal(FromSpec(once))
		b2, _ := proto.Marshal(FromSpec(twice))
		if !proto.Equal(FromSpec(once), FromSpec(twice)) {
			t.Fatalf("conversion not stable:\n%x\n%x", b1, b2)
		}
	})
}
