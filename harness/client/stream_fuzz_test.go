package client

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/wren-vm/wren/lib/wire"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// FuzzParseReadStreamResponse checks the hand decoder against the
// protobuf runtime on any bytes: both must accept the same inputs and
// find the same data, and the decoder must never panic. Seeds beyond
// these are in testdata/fuzz/FuzzParseReadStreamResponse.
func FuzzParseReadStreamResponse(f *testing.F) {
	for _, m := range []*agentpb.ReadStreamResponse{{}, {Data: []byte("x")}, {Data: bytes.Repeat([]byte{0}, 300)}} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x08, 0x01, 0x0a, 0x01, 'a'}) // data as a varint (unknown), then data
	f.Add([]byte{0x0a, 0x05, 'a'})             // data cut short
	f.Add([]byte{0x0b, 0x0c})                  // an empty group numbered 1
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parseReadStreamResponse(b)
		var want agentpb.ReadStreamResponse
		wantErr := proto.Unmarshal(b, &want)
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("%x: hand decoder says %v, protobuf says %v", b, err, wantErr)
		}
		if err == nil && !bytes.Equal(got, want.Data) {
			t.Fatalf("%x: hand decoder found %q, protobuf %q", b, got, want.Data)
		}
	})
}

func TestReadStreamRequestMatchesProtobuf(t *testing.T) {
	for _, req := range []*agentpb.ReadStreamRequest{
		{},
		{ContainerId: "c", ExecId: "e", Len: 1},
		{ContainerId: "c"},
		{ExecId: strings.Repeat("x", 200), Len: 32 << 10},
		{ContainerId: "c", Len: math.MaxUint32},
	} {
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		got := appendReadStreamRequest([]byte("prefix"), req.ContainerId, req.ExecId, req.Len)
		if !bytes.Equal(got[len("prefix"):], want) {
			t.Errorf("%v: encoded %x, protobuf %x", req, got[len("prefix"):], want)
		}
		if n := readStreamRequestSize(req.ContainerId, req.ExecId, req.Len); n != len(want) {
			t.Errorf("%v: size %d, protobuf %d", req, n, len(want))
		}
	}
}

// streamReplySize is what the agent's reply to a full read takes, so a
// buffer of that size needs no regrowth.
func TestStreamReplySize(t *testing.T) {
	for _, n := range []int{1, 127, 128, 32 << 10, 1 << 20, wire.MaxData - 16} {
		payload, err := proto.Marshal(&agentpb.ReadStreamResponse{Data: make([]byte, n)})
		if err != nil {
			t.Fatal(err)
		}
		reply := append(wire.ResponsePrefix(nil, nil, len(payload)), payload...)
		if got := streamReplySize(n); got != len(reply) {
			t.Errorf("reply with %d bytes: %d bytes, streamReplySize says %d", n, len(reply), got)
		}
		if st, p, err := wire.ParseResponse(reply); err != nil || len(st) != 0 || len(p) != protowire.SizeTag(1)+protowire.SizeBytes(n) {
			t.Errorf("reply with %d bytes does not parse back: %v", n, err)
		}
	}
}
