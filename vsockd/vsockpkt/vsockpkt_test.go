package vsockpkt

import (
	"bytes"
	"errors"
	"testing"
)

func sample() Header {
	return Header{SrcCID: 3, DstCID: 2, SrcPort: 0x40000000, DstPort: 1024, Len: 5, Type: TypeStream,
		Op: OpRW, Flags: 0, BufAlloc: 262144, FwdCnt: 77}
}

func TestEncodeDecode(t *testing.T) {
	h := sample()
	b := make([]byte, HeaderLen)
	h.Encode(b)
	// Spot-check the wire layout of the spec (little-endian, packed).
	if b[0] != 3 || b[8] != 2 || b[19] != 0x40 || b[20] != 0x00 || b[21] != 0x04 || b[24] != 5 || b[28] != 1 || b[30] != 5 || b[40] != 77 {
		t.Fatalf("wire bytes % x", b)
	}
	got, err := Decode(b)
	if err != nil || got != h {
		t.Fatalf("Decode = %+v %v", got, err)
	}
	if _, err := Decode(b[:43]); !errors.Is(err, ErrShort) {
		t.Fatalf("Decode(short) = %v", err)
	}
}

func packet(h Header, payload []byte) []byte {
	b := make([]byte, HeaderLen+len(payload))
	h.Encode(b)
	copy(b[HeaderLen:], payload)
	return b
}

func split(b []byte, cuts ...int) [][]byte {
	var out [][]byte
	prev := 0
	for _, c := range cuts {
		out = append(out, b[prev:c])
		prev = c
	}
	return append(out, b[prev:])
}

func TestParseSplitBuffers(t *testing.T) {
	h := sample()
	pkt := packet(h, []byte("hello"))
	scratch := make([]byte, HeaderLen+MaxPayload)
	for _, bufs := range [][][]byte{
		{pkt},
		split(pkt, HeaderLen),
		split(pkt, 10, 44, 46),
		split(pkt, 1, 2, 3, 43, 45),
		split(pkt, 0, 0, 44, 44),
	} {
		got, payload, err := Parse(bufs, scratch)
		if err != nil || got != h || string(payload) != "hello" {
			t.Fatalf("Parse(%d bufs) = %+v %q %v", len(bufs), got, payload, err)
		}
	}
	// Trailing bytes beyond hdr.len are ignored.
	if _, payload, err := Parse([][]byte{pkt, []byte("extra")}, scratch); err != nil || string(payload) != "hello" {
		t.Fatalf("trailing bytes: %q %v", payload, err)
	}
}

func TestParseRejects(t *testing.T) {
	scratch := make([]byte, HeaderLen+MaxPayload)
	h := sample()
	pkt := packet(h, []byte("hello"))
	if _, _, err := Parse([][]byte{pkt[:30]}, scratch); !errors.Is(err, ErrShort) {
		t.Errorf("short header: %v", err)
	}
	if _, _, err := Parse([][]byte{pkt[:HeaderLen+3]}, scratch); err == nil {
		t.Error("payload shorter than hdr.len accepted")
	}
	h.Len = MaxPayload + 1
	big := packet(h, make([]byte, MaxPayload+1))
	if _, _, err := Parse([][]byte{big}, scratch); err == nil {
		t.Error("oversized payload accepted")
	}
	if _, _, err := Parse([][]byte{pkt}, make([]byte, 100)); err == nil {
		t.Error("small scratch accepted")
	}
}

func TestScatterGather(t *testing.T) {
	bufs := [][]byte{make([]byte, 3), make([]byte, 0), make([]byte, 5), make([]byte, 4)}
	if n := Scatter(bufs, 2, []byte("abcdefghijk")); n != 10 {
		t.Fatalf("Scatter fitted %d, want 10", n)
	}
	got := make([]byte, 12)
	n := Gather(got, bufs, 0)
	if n != 12 || !bytes.Equal(got[2:], []byte("abcdefghij")) {
		t.Fatalf("Gather %d %q", n, got)
	}
}
