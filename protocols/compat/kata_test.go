package compat

import (
	"fmt"
	"os"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// TestAgainstKata compares our schema with a descriptor set compiled from a
// Kata Containers checkout (see protocols/README.md), so a new Kata release
// can be checked without rewriting the tables by hand. It needs that file,
// which CI does not have, so it runs only when KATA_DESCRIPTOR_SET names it.
func TestAgainstKata(t *testing.T) {
	path := os.Getenv("KATA_DESCRIPTOR_SET")
	if path == "" {
		t.Skip("KATA_DESCRIPTOR_SET not set: no Kata descriptor set to compare with")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read descriptor set: %v", err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(raw, &set); err != nil {
		t.Fatalf("parse descriptor set %s: %v", path, err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		t.Fatalf("link descriptor set %s: %v", path, err)
	}
	var kata []protoreflect.FileDescriptor
	files.RangeFiles(func(f protoreflect.FileDescriptor) bool {
		// Only the agent API packages; google.protobuf and the rest of
		// Kata's protos (confidential data hub, ...) are not ours to serve.
		if f.Package() == "grpc" || f.Package() == "types" {
			kata = append(kata, f)
		}
		return true
	})
	if len(kata) == 0 {
		t.Fatalf("%s holds no file of package grpc or types", path)
	}

	diff(t, "schema", schemaLines(kata), schemaLines(ourFiles()))
}

// schemaLines flattens everything that matters on the wire into one line per
// service method, message field and enum value.
func schemaLines(files []protoreflect.FileDescriptor) []string {
	var lines []string
	msgs, enums := collect(files)
	for name, md := range msgs {
		if md.Fields().Len() == 0 {
			lines = append(lines, fmt.Sprintf("message %s {}", name))
		}
		for i := 0; i < md.Fields().Len(); i++ {
			lines = append(lines, fmt.Sprintf("message %s: %s", name, fieldSig(md.Fields().Get(i))))
		}
	}
	for name, ed := range enums {
		for i := 0; i < ed.Values().Len(); i++ {
			v := ed.Values().Get(i)
			lines = append(lines, fmt.Sprintf("enum %s: %d %s", name, v.Number(), v.Name()))
		}
	}
	for _, f := range files {
		for i := 0; i < f.Services().Len(); i++ {
			sd := f.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				md := sd.Methods().Get(j)
				lines = append(lines, fmt.Sprintf("rpc %s/%s(%s) %s streaming=%t,%t", sd.FullName(), md.Name(),
					md.Input().FullName(), md.Output().FullName(), md.IsStreamingClient(), md.IsStreamingServer()))
			}
		}
	}
	return lines
}
