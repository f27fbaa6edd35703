// Package vsockpkt encodes and decodes virtio-vsock packets: the 44-byte
// little-endian header of the virtio spec ("Device Operation") and the
// scatter/gather copies between packets and descriptor-chain buffers.
package vsockpkt

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// HeaderLen is the size of struct virtio_vsock_hdr.
const HeaderLen = 44

// MaxPayload is the largest payload a Linux guest puts in one packet
// (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE); larger packets are rejected.
const MaxPayload = 64 << 10

// HostCID is the address the guest uses for the host.
const HostCID = 2

// Socket types.
const (
	TypeStream    = 1
	TypeSeqpacket = 2
)

// Op is a packet operation.
type Op uint16

// Operations.
const (
	OpInvalid       Op = 0
	OpRequest       Op = 1
	OpResponse      Op = 2
	OpRST           Op = 3
	OpShutdown      Op = 4
	OpRW            Op = 5
	OpCreditUpdate  Op = 6
	OpCreditRequest Op = 7
)

func (o Op) String() string {
	switch o {
	case OpRequest:
		return "REQUEST"
	case OpResponse:
		return "RESPONSE"
	case OpRST:
		return "RST"
	case OpShutdown:
		return "SHUTDOWN"
	case OpRW:
		return "RW"
	case OpCreditUpdate:
		return "CREDIT_UPDATE"
	case OpCreditRequest:
		return "CREDIT_REQUEST"
	}
	return fmt.Sprintf("op(%d)", uint16(o))
}

// SHUTDOWN flags: the sender will receive (RCV) or send (SEND) no more.
const (
	ShutdownRcv  = 1
	ShutdownSend = 2
)

// Header is struct virtio_vsock_hdr.
type Header struct {
	SrcCID   uint64
	DstCID   uint64
	SrcPort  uint32
	DstPort  uint32
	Len      uint32
	Type     uint16
	Op       Op
	Flags    uint32
	BufAlloc uint32
	FwdCnt   uint32
}

// ErrShort means fewer than HeaderLen bytes were supplied.
var ErrShort = errors.New("vsock packet shorter than its header")

// Decode parses a header from the first HeaderLen bytes of b.
func Decode(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, ErrShort
	}
	return Header{
		SrcCID:   binary.LittleEndian.Uint64(b[0:]),
		DstCID:   binary.LittleEndian.Uint64(b[8:]),
		SrcPort:  binary.LittleEndian.Uint32(b[16:]),
		DstPort:  binary.LittleEndian.Uint32(b[20:]),
		Len:      binary.LittleEndian.Uint32(b[24:]),
		Type:     binary.LittleEndian.Uint16(b[28:]),
		Op:       Op(binary.LittleEndian.Uint16(b[30:])),
		Flags:    binary.LittleEndian.Uint32(b[32:]),
		BufAlloc: binary.LittleEndian.Uint32(b[36:]),
		FwdCnt:   binary.LittleEndian.Uint32(b[40:]),
	}, nil
}

// Encode writes h into the first HeaderLen bytes of b.
func (h Header) Encode(b []byte) {
	_ = b[HeaderLen-1]
	binary.LittleEndian.PutUint64(b[0:], h.SrcCID)
	binary.LittleEndian.PutUint64(b[8:], h.DstCID)
	binary.LittleEndian.PutUint32(b[16:], h.SrcPort)
	binary.LittleEndian.PutUint32(b[20:], h.DstPort)
	binary.LittleEndian.PutUint32(b[24:], h.Len)
	binary.LittleEndian.PutUint16(b[28:], h.Type)
	binary.LittleEndian.PutUint16(b[30:], uint16(h.Op))
	binary.LittleEndian.PutUint32(b[32:], h.Flags)
	binary.LittleEndian.PutUint32(b[36:], h.BufAlloc)
	binary.LittleEndian.PutUint32(b[40:], h.FwdCnt)
}

// Parse decodes a packet the driver put on the tx queue, given as the
// device-readable buffers of its chain (header and payload may be split
// across buffers any way the driver likes). It copies the header and the
// payload into scratch (which must hold HeaderLen+MaxPayload bytes) so that
// the guest cannot change them while they are being acted on, and returns the
// header and the payload (a sub-slice of scratch).
func Parse(bufs [][]byte, scratch []byte) (Header, []byte, error) {
	if len(scratch) < HeaderLen+MaxPayload {
		return Header{}, nil, fmt.Errorf("scratch buffer of %d bytes too small", len(scratch))
	}
	n := Gather(scratch[:HeaderLen], bufs, 0)
	if n < HeaderLen {
		return Header{}, nil, ErrShort
	}
	h, _ := Decode(scratch)
	if h.Len > MaxPayload {
		return h, nil, fmt.Errorf("payload length %d exceeds %d", h.Len, MaxPayload)
	}
	payload := scratch[HeaderLen : HeaderLen+int(h.Len)]
	if got := Gather(payload, bufs, HeaderLen); got < len(payload) {
		return h, nil, fmt.Errorf("header says %d payload bytes, chain holds %d", h.Len, got)
	}
	return h, payload, nil
}

// Gather copies into dst the bytes of the concatenated bufs starting at
// offset skip, and returns how many it copied.
func Gather(dst []byte, bufs [][]byte, skip int) int {
	n := 0
	for _, b := range bufs {
		if n == len(dst) {
			break
		}
		if skip >= len(b) {
			skip -= len(b)
			continue
		}
		n += copy(dst[n:], b[skip:])
		skip = 0
	}
	return n
}

// Scatter copies src into the concatenated bufs starting at offset skip, and
// returns how many bytes fitted.
func Scatter(bufs [][]byte, skip int, src []byte) int {
	n := 0
	for _, b := range bufs {
		if n == len(src) {
			break
		}
		if skip >= len(b) {
			skip -= len(b)
			continue
		}
		n += copy(b[skip:], src[n:])
		skip = 0
	}
	return n
}
