package vsockpkt

import (
	"bytes"
	"testing"
)

// FuzzParse splits arbitrary bytes into buffers at fuzzer-chosen points and
// parses them as a tx packet: no panic, and an accepted packet's payload is
// exactly hdr.len bytes of the concatenated buffers after the header.
func FuzzParse(f *testing.F) {
	h := Header{SrcCID: 3, DstCID: 2, SrcPort: 1, DstPort: 2, Len: 4, Type: TypeStream, Op: OpRW, BufAlloc: 4096}
	pkt := make([]byte, HeaderLen+4)
	h.Encode(pkt)
	copy(pkt[HeaderLen:], "data")
	f.Add(pkt, []byte{44})
	f.Add(pkt, []byte{1, 2, 3, 40})
	f.Add(pkt[:20], []byte{})
	h.Len = 0xffffffff
	h.Encode(pkt)
	f.Add(pkt, []byte{44})
	f.Fuzz(func(t *testing.T, data []byte, cuts []byte) {
		var bufs [][]byte
		rest := data
		for _, c := range cuts {
			k := min(int(c), len(rest))
			bufs = append(bufs, rest[:k])
			rest = rest[k:]
		}
		bufs = append(bufs, rest)
		scratch := make([]byte, HeaderLen+MaxPayload)
		hdr, payload, err := Parse(bufs, scratch)
		if err != nil {
			return
		}
		if len(data) < HeaderLen+int(hdr.Len) || int(hdr.Len) != len(payload) {
			t.Fatalf("accepted hdr.len %d with %d bytes of data", hdr.Len, len(data))
		}
		if !bytes.Equal(payload, data[HeaderLen:HeaderLen+int(hdr.Len)]) {
			t.Fatal("payload differs from the bytes after the header")
		}
		var re [HeaderLen]byte
		hdr.Encode(re[:])
		if !bytes.Equal(re[:], data[:HeaderLen]) {
			t.Fatal("header does not re-encode to its input")
		}
	})
}
