package compat

import (
	"slices"
	"testing"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/wren-vm/wren/protocols/agentpb"
)

// The generated service descriptions (protoc-gen-go-ttrpcdesc) hold every
// method of their service's descriptor and no other, by its wire name.
// (That each calls the service's method of that name, with its request
// type, the compiler and the round trips of ttrpc_test.go check.)
func TestServiceDescsMatchDescriptors(t *testing.T) {
	for _, tc := range []struct {
		name, const_ string
		service      protoreflect.ServiceDescriptor
		desc         *ttrpc.ServiceDesc
	}{
		{"AgentService", agentpb.AgentServiceServiceName,
			agentpb.File_wren_protocols_agent_proto.Services().ByName("AgentService"),
			agentpb.AgentServiceServiceDesc(&agentStub{})},
		{"Health", agentpb.HealthServiceName,
			agentpb.File_wren_protocols_health_proto.Services().ByName("Health"),
			agentpb.HealthServiceDesc(healthStub{})},
	} {
		if tc.const_ != string(tc.service.FullName()) {
			t.Errorf("%s: name constant %q, want %q", tc.name, tc.const_, tc.service.FullName())
		}
		var want, got []string
		methods := tc.service.Methods()
		for i := range methods.Len() {
			want = append(want, string(methods.Get(i).Name()))
		}
		for name := range tc.desc.Methods {
			got = append(got, name)
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s: description has methods %v, descriptor %v", tc.name, got, want)
		}
		if len(tc.desc.Streams) != 0 {
			t.Errorf("%s: description has streams %v", tc.name, tc.desc.Streams)
		}

	}
}
