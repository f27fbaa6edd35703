package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// describeOptions are describe's flags.
type describeOptions struct {
	example bool
}

func (o *describeOptions) define(fs *flag.FlagSet) {
	fs.BoolVar(&o.example, "example", false, "print only the JSON example (a REQUEST to edit and pass as @file)")
}

func describeFlags(fs *flag.FlagSet) { new(describeOptions).define(fs) }

// describeCommand is `wrenctl describe [--example] RPC`: what grpcurl's
// describe shows, from the compiled descriptors in protocols/agentpb.
func describeCommand(_ globals, args []string) int {
	c := findCommand("describe")
	fs := flag.NewFlagSet("wrenctl describe", flag.ContinueOnError)
	var o describeOptions
	o.define(fs)
	if code, ok := parseCommandFlags(c, fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 {
		commandUsage(os.Stderr, c)
		return exitUsage
	}
	m, ok := findMethod(fs.Arg(0))
	if !ok {
		return usageError(os.Stderr, "describe: no RPC %q (see 'wrenctl list')", fs.Arg(0))
	}
	if err := describe(os.Stdout, m, o.example); err != nil {
		fmt.Fprintf(os.Stderr, "wrenctl describe: %v\n", err)
		return exitError
	}
	return exitOK
}

// describe prints the RPC, its request message's fields as a tree and a
// request with every field filled; with exampleOnly just the request.
func describe(w io.Writer, m protoreflect.MethodDescriptor, exampleOnly bool) error {
	example, err := exampleJSON(m.Input())
	if err != nil {
		return fmt.Errorf("example for %s: %w", m.Input().FullName(), err)
	}
	if exampleOnly {
		fmt.Fprintln(w, example)
		return nil
	}
	fmt.Fprintf(w, "%s (%s)\n  %s\n\n", m.Name(), m.FullName(), upperFirst(rpcSummaries[string(m.Name())]))
	fmt.Fprintf(w, "request %s:\n", m.Input().FullName())
	if m.Input().Fields().Len() == 0 {
		fmt.Fprintln(w, "  (no fields)")
	}
	printFields(w, m.Input(), 1, map[protoreflect.FullName]bool{m.Input().FullName(): true})
	fmt.Fprintf(w, "response %s\n\n", m.Output().FullName())
	fmt.Fprintf(w, "example (JSON names; protojson also takes the proto names):\n%s\n\n", example)
	fmt.Fprintf(w, "  wrenctl %s '<json>'   or   wrenctl describe --example %s > req.json; wrenctl %s @req.json\n", m.Name(), m.Name(), m.Name())
	return nil
}

// printFields lists md's fields at depth, descending into message types
// not already on the path (a recursive type is listed once).
func printFields(w io.Writer, md protoreflect.MessageDescriptor, depth int, path map[protoreflect.FullName]bool) {
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		name := strings.Repeat("  ", depth) + fd.JSONName()
		fmt.Fprintf(w, "%-40s %s\n", name, fieldType(fd))
		sub := fd.Message()
		if fd.IsMap() {
			sub = fd.MapValue().Message()
		}
		if sub == nil || isWellKnown(sub) || path[sub.FullName()] {
			continue
		}
		path[sub.FullName()] = true
		printFields(w, sub, depth+1, path)
		delete(path, sub.FullName())
	}
}

// fieldType renders a field's type: repeated, map<K, V>, optional, oneof
// membership, enum values.
func fieldType(fd protoreflect.FieldDescriptor) string {
	var t string
	switch {
	case fd.IsMap():
		t = fmt.Sprintf("map<%s, %s>", kindName(fd.MapKey()), kindName(fd.MapValue()))
	case fd.IsList():
		t = "repeated " + kindName(fd)
	default:
		t = kindName(fd)
	}
	if o := fd.ContainingOneof(); o != nil {
		if o.IsSynthetic() {
			t = "optional " + t
		} else {
			t += fmt.Sprintf(" (oneof %s)", o.Name())
		}
	}
	if e := fd.Enum(); e != nil && !fd.IsMap() {
		var names []string
		for i := 0; i < e.Values().Len(); i++ {
			names = append(names, string(e.Values().Get(i).Name()))
		}
		t += " {" + strings.Join(names, ", ") + "}"
	}
	return t
}

func kindName(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return string(fd.Message().FullName())
	case protoreflect.EnumKind:
		return "enum " + string(fd.Enum().FullName())
	}
	return fd.Kind().String()
}

// isWellKnown reports the google.protobuf types, whose JSON forms are
// their own (Empty is {}, Timestamp a string, ...).
func isWellKnown(md protoreflect.MessageDescriptor) bool {
	return md.ParentFile().Package() == "google.protobuf"
}

// exampleJSON is a request of type md with every field set (one element
// per list and map, the first member of each oneof), as protojson.
func exampleJSON(md protoreflect.MessageDescriptor) (string, error) {
	msg := dynamicpb.NewMessage(md)
	fill(msg, map[protoreflect.FullName]bool{md.FullName(): true})
	b, err := protojson.Marshal(msg)
	if err != nil {
		return "", err
	}
	// protojson varies its spacing on purpose; the example should read
	// the same every time.
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return "", err
	}
	return out.String(), nil
}

func fill(msg protoreflect.Message, path map[protoreflect.FullName]bool) {
	fields := msg.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if o := fd.ContainingOneof(); o != nil && !o.IsSynthetic() && msg.WhichOneof(o) != nil {
			continue
		}
		switch {
		case fd.IsMap():
			key := sampleScalar(fd.MapKey()).MapKey()
			m := msg.Mutable(fd).Map()
			if vd := fd.MapValue(); vd.Message() != nil {
				v := m.NewValue()
				if fillable(vd.Message(), path) {
					fillNested(v.Message(), path)
				}
				m.Set(key, v)
			} else {
				m.Set(key, sampleScalar(vd))
			}
		case fd.IsList():
			l := msg.Mutable(fd).List()
			if fd.Message() != nil {
				if !fillable(fd.Message(), path) {
					continue
				}
				v := l.NewElement()
				fillNested(v.Message(), path)
				l.Append(v)
			} else {
				l.Append(sampleScalar(fd))
			}
		case fd.Message() != nil:
			if !fillable(fd.Message(), path) {
				continue
			}
			fillNested(msg.Mutable(fd).Message(), path)
		default:
			msg.Set(fd, sampleScalar(fd))
		}
	}
}

// fillable: a message type not already being filled on this path, and
// not a well-known type other than Empty (whose JSON form is {}).
func fillable(md protoreflect.MessageDescriptor, path map[protoreflect.FullName]bool) bool {
	if path[md.FullName()] {
		return false
	}
	return !isWellKnown(md) || md.FullName() == "google.protobuf.Empty"
}

func fillNested(m protoreflect.Message, path map[protoreflect.FullName]bool) {
	name := m.Descriptor().FullName()
	path[name] = true
	fill(m, path)
	delete(path, name)
}

// sampleScalar is a non-zero value of a scalar field, so that the example
// shows every field (protojson leaves zero values out).
func sampleScalar(fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(fd.JSONName())
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte("data"))
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(1)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(1)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(1)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(1)
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(1.5)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(1.5)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		v := vals.Get(0)
		if vals.Len() > 1 {
			v = vals.Get(1)
		}
		return protoreflect.ValueOfEnum(v.Number())
	}
	return fd.Default()
}
