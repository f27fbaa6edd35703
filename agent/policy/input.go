package policy

import (
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/wren-vm/wren/agent/errdefs"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// Input is a request as Kata's agent hands it to its policy: the request
// serialized by serde from the Rust protobuf structs (Kata's
// src/libs/protocols: rust-protobuf with serde derives). Rules written for
// Kata, genpolicy's among them, depend on that shape, which differs from
// protobuf's JSON mapping:
//
//   - every field is present, with its zero value when unset ("", 0,
//     false, [], {}); names are the .proto names, with "_" appended to a
//     Rust keyword (a mount's "type" is "type_");
//   - an unset singular message is null (Kata's serialize_message_field);
//   - an enum is its number (serialize_enum_or_unknown);
//   - bytes are an array of numbers (serde's Vec<u8>);
//   - 64-bit integers are JSON numbers, not strings;
//   - a oneof is null when unset, else {"<field name>": value} (serde's
//     externally tagged enum).
//
// CopyFileRequest is the exception, as in Kata: its policy input is
// PolicyCopyFileRequest, without the data and with the file type named
// (see copyFileInput).
//
// The result is a tree of map[string]any, []any, string, bool and
// json.Number, which json.Marshal writes as Kata's serde_json would (up to
// key order) and policy engines take as input directly.
func Input(req proto.Message) (any, error) {
	if cf, ok := req.(*agentpb.CopyFileRequest); ok {
		return copyFileInput(cf)
	}
	return messageInput(req.ProtoReflect()), nil
}

func messageInput(m protoreflect.Message) map[string]any {
	fields := m.Descriptor().Fields()
	out := make(map[string]any, fields.Len())
	for i := range fields.Len() {
		fd := fields.Get(i)
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			name := rustName(string(od.Name()))
			if _, done := out[name]; done {
				continue
			}
			out[name] = oneofInput(m, od)
			continue
		}
		out[rustName(string(fd.Name()))] = fieldInput(m, fd)
	}
	return out
}

// oneofInput is null, or the set member as serde tags an enum variant
// (rust-protobuf names the variant after the field).
func oneofInput(m protoreflect.Message, od protoreflect.OneofDescriptor) any {
	fd := m.WhichOneof(od)
	if fd == nil {
		return nil
	}
	return map[string]any{string(fd.Name()): singularInput(fd, m.Get(fd))}
}

func fieldInput(m protoreflect.Message, fd protoreflect.FieldDescriptor) any {
	switch {
	case fd.IsList():
		l := m.Get(fd).List()
		out := make([]any, l.Len())
		for i := range l.Len() {
			out[i] = singularInput(fd, l.Get(i))
		}
		return out
	case fd.IsMap():
		mp := m.Get(fd).Map()
		out := make(map[string]any, mp.Len())
		mp.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
			out[k.String()] = singularInput(fd.MapValue(), v)
			return true
		})
		return out
	case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
		if !m.Has(fd) {
			return nil
		}
	}
	return singularInput(fd, m.Get(fd))
}

func singularInput(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return messageInput(v.Message())
	case protoreflect.BoolKind:
		return v.Bool()
	case protoreflect.StringKind:
		return v.String()
	case protoreflect.BytesKind:
		b := v.Bytes()
		out := make([]any, len(b))
		for i, c := range b {
			out[i] = json.Number(strconv.Itoa(int(c)))
		}
		return out
	case protoreflect.EnumKind:
		return json.Number(strconv.FormatInt(int64(v.Enum()), 10))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return json.Number(strconv.FormatInt(v.Int(), 10))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return json.Number(strconv.FormatUint(v.Uint(), 10))
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return json.Number(strconv.FormatFloat(v.Float(), 'g', -1, 64))
	}
	return nil
}

// rustKeywords are the Rust keywords rust-protobuf escapes in field names
// by appending "_".
var rustKeywords = map[string]bool{
	"as": true, "async": true, "await": true, "break": true, "const": true, "continue": true,
	"crate": true, "dyn": true, "else": true, "enum": true, "extern": true, "false": true,
	"fn": true, "for": true, "if": true, "impl": true, "in": true, "let": true, "loop": true,
	"match": true, "mod": true, "move": true, "mut": true, "pub": true, "ref": true,
	"return": true, "self": true, "Self": true, "static": true, "struct": true, "super": true,
	"trait": true, "true": true, "type": true, "unsafe": true, "use": true, "where": true,
	"while": true, "abstract": true, "become": true, "box": true, "do": true, "final": true,
	"macro": true, "override": true, "priv": true, "typeof": true, "unsized": true,
	"virtual": true, "yield": true, "try": true,
}

func rustName(name string) string {
	if rustKeywords[name] {
		return name + "_"
	}
	return name
}

// copyFileInput is Kata's PolicyCopyFileRequest: the request without its
// data, with the file type spelled out ("Regular", "Directory", "Symlink",
// "Unknown") and a symlink's target, so that rules need no byte arithmetic.
// A symlink whose target is not UTF-8 is refused, as Kata refuses it.
func copyFileInput(req *agentpb.CopyFileRequest) (any, error) {
	fileType := "Unknown"
	var target any
	switch req.GetFileMode() & 0o170000 { // S_IFMT
	case 0o100000:
		fileType = "Regular"
	case 0o040000:
		fileType = "Directory"
	case 0o120000:
		fileType = "Symlink"
		if !utf8.Valid(req.GetData()) {
			return nil, errdefs.New(errdefs.ErrInvalidArgument, "CopyFileRequest: symlink target is not UTF-8")
		}
		target = string(req.GetData())
	}
	return map[string]any{
		"path":           req.GetPath(),
		"file_type":      fileType,
		"symlink_target": target,
		"file_size":      json.Number(strconv.FormatInt(req.GetFileSize(), 10)),
		"file_mode":      json.Number(fmt.Sprint(req.GetFileMode())),
		"dir_mode":       json.Number(fmt.Sprint(req.GetDirMode())),
		"uid":            json.Number(fmt.Sprint(req.GetUid())),
		"gid":            json.Number(fmt.Sprint(req.GetGid())),
		"offset":         json.Number(strconv.FormatInt(req.GetOffset(), 10)),
	}, nil
}
