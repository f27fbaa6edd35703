package wire

import (
	"bytes"
	"testing"

	"github.com/containerd/ttrpc"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
)

// The encoders must produce what ttrpc's own generated Request and
// Response types decode, and the decoders must read what they encode.

func TestRequestMatchesTTRPC(t *testing.T) {
	md := []KeyValue{{"k", "v1"}, {"k", "v2"}, {"other", ""}}
	b := AppendRequest(nil, "grpc.AgentService", "ExecProcess", []byte("payload"), 12345, md)
	var want ttrpc.Request
	if err := proto.Unmarshal(b, &want); err != nil {
		t.Fatalf("ttrpc cannot decode our request: %v", err)
	}
	if want.Service != "grpc.AgentService" || want.Method != "ExecProcess" || string(want.Payload) != "payload" ||
		want.TimeoutNano != 12345 || len(want.Metadata) != 3 || want.Metadata[1].Value != "v2" {
		t.Fatalf("ttrpc decoded %v", &want)
	}

	enc, err := proto.Marshal(&want)
	if err != nil {
		t.Fatal(err)
	}
	var got Request
	if err := ParseRequest(enc, &got); err != nil {
		t.Fatal(err)
	}
	if string(got.Service) != want.Service || string(got.Method) != want.Method || !bytes.Equal(got.Payload, want.Payload) || got.TimeoutNano != want.TimeoutNano {
		t.Fatalf("parsed %+v from %v", got, &want)
	}
	var kvs []KeyValue
	if err := got.ForEachMetadata(func(k, v string) { kvs = append(kvs, KeyValue{k, v}) }); err != nil {
		t.Fatal(err)
	}
	if len(kvs) != 3 || kvs[0] != md[0] || kvs[1] != md[1] || kvs[2] != md[2] {
		t.Fatalf("metadata %v, want %v", kvs, md)
	}
}

func TestResponseMatchesTTRPC(t *testing.T) {
	st, _ := proto.Marshal(&spb.Status{Code: 5, Message: "not found"})
	for _, tc := range []struct {
		status, payload []byte
	}{{nil, []byte("reply")}, {st, nil}, {nil, nil}} {
		b := append(ResponsePrefix(nil, tc.status, len(tc.payload)), tc.payload...)
		var r ttrpc.Response
		if err := proto.Unmarshal(b, &r); err != nil {
			t.Fatalf("ttrpc cannot decode our response: %v", err)
		}
		if r.Status == nil || r.Status.Code != 0 && tc.status == nil || !bytes.Equal(r.Payload, tc.payload) {
			t.Fatalf("ttrpc decoded %v", &r)
		}
		gotSt, gotPayload, err := ParseResponse(b)
		if err != nil || !bytes.Equal(gotSt, tc.status) || !bytes.Equal(gotPayload, tc.payload) {
			t.Fatalf("parsed %q %q %v", gotSt, gotPayload, err)
		}
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	h := Header{Length: 0x00123456, StreamID: 0x89abcdef, Type: TypeResponse, Flags: 4}
	var b [HeaderLen]byte
	h.Put(b[:])
	if !bytes.Equal(b[:], []byte{0, 0x12, 0x34, 0x56, 0x89, 0xab, 0xcd, 0xef, 2, 4}) {
		t.Fatalf("encoded % x", b)
	}
	if got := ParseHeader(b[:]); got != h {
		t.Fatalf("decoded %+v", got)
	}
}

func TestParseRequestRejectsTruncation(t *testing.T) {
	b := AppendRequest(nil, "svc", "m", []byte("payload"), 7, []KeyValue{{"a", "b"}})
	for n := 1; n < len(b); n++ {
		var r Request
		err := ParseRequest(b[:n], &r)
		if err == nil {
			// A cut that falls between fields is a valid shorter message.
			continue
		}
		if len(r.Service)+len(r.Method) > n {
			t.Fatalf("cut at %d: fields past the end", n)
		}
	}
}

// FuzzParseRequest: whatever the bytes, ParseRequest never panics, and
// when the reference decoder (ttrpc's generated type) accepts them, it
// agrees with it.
func FuzzParseRequest(f *testing.F) {
	f.Add(AppendRequest(nil, "grpc.Health", "Check", nil, 0, nil))
	f.Add(AppendRequest(nil, "grpc.AgentService", "ExecProcess", []byte{0x0a, 0x01, 'x'}, 1e9, []KeyValue{{"k", "v"}}))
	f.Add([]byte{0x0a, 0xff, 0xff, 0x01, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		var got Request
		err := ParseRequest(b, &got)
		var want ttrpc.Request
		if proto.Unmarshal(b, &want) != nil {
			return
		}
		if err != nil {
			t.Fatalf("ttrpc accepts what ParseRequest rejects: %v", err)
		}
		if string(got.Service) != want.Service || string(got.Method) != want.Method ||
			!bytes.Equal(got.Payload, want.Payload) || got.TimeoutNano != want.TimeoutNano || len(got.Metadata) != len(want.Metadata) {
			t.Fatalf("parsed %+v, ttrpc %v", got, &want)
		}
		i := 0
		if err := got.ForEachMetadata(func(k, v string) {
			if k != want.Metadata[i].Key || v != want.Metadata[i].Value {
				t.Fatalf("metadata %d: %q=%q, ttrpc %v", i, k, v, want.Metadata[i])
			}
			i++
		}); err != nil {
			t.Fatal(err)
		}
	})
}
