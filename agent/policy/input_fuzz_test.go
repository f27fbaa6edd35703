package policy

import (
	"encoding/json"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/wren-vm/wren/protocols/agentpb"
)

// requestTypes are the request messages of every AgentService method.
func requestTypes(t testing.TB) []protoreflect.MessageType {
	methods := agentpb.File_wren_protocols_agent_proto.Services().ByName("AgentService").Methods()
	var out []protoreflect.MessageType
	for i := range methods.Len() {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(methods.Get(i).Input().FullName())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, mt)
	}
	return out
}

// FuzzInput: any request the wire can carry converts to a policy input
// that JSON can write (Input runs before every handler of the policy
// build), and the input names every field of the message.
func FuzzInput(f *testing.F) {
	types := requestTypes(f)
	seed, _ := proto.Marshal(&agentpb.CreateContainerRequest{ContainerId: "c", OCI: &agentpb.Spec{Version: "1", Linux: &agentpb.Linux{}}})
	f.Add(byte(0), seed)
	f.Add(byte(1), []byte{})
	f.Fuzz(func(t *testing.T, which byte, data []byte) {
		mt := types[int(which)%len(types)]
		msg := mt.New().Interface()
		if err := proto.Unmarshal(data, msg); err != nil {
			return
		}
		in, err := Input(msg)
		if err != nil {
			if _, ok := msg.(*agentpb.CopyFileRequest); ok {
				return // a symlink target that is not UTF-8
			}
			t.Fatalf("%T: %v", msg, err)
		}
		if _, err := json.Marshal(in); err != nil {
			t.Fatalf("%T: input does not marshal: %v", msg, err)
		}
		if _, ok := msg.(*agentpb.CopyFileRequest); ok {
			return
		}
		fields := msg.ProtoReflect().Descriptor().Fields()
		m := in.(map[string]any)
		for i := range fields.Len() {
			fd := fields.Get(i)
			name := rustName(string(fd.Name()))
			if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
				name = rustName(string(od.Name()))
			}
			if _, ok := m[name]; !ok {
				t.Fatalf("%T: input lacks %s", msg, name)
			}
		}
	})
}
