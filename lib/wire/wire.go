// Package wire encodes and decodes the ttrpc wire protocol (containerd/ttrpc
// PROTOCOL.md) without reflection or intermediate messages: the 10-byte
// frame header, the ttrpc Request envelope and the Response envelope. The
// agent's server and the harness's synchronous client share it; both stay
// wire-compatible with the stock Go ttrpc and Kata's Rust ttrpc.
//
// Decoding aliases the input: a parsed Request's Service, Method and
// Payload point into the frame buffer, so a caller that reuses the buffer
// must finish with them first.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// HeaderLen is the size of a frame header: data length (4, big endian),
// stream id (4, big endian), message type (1), flags (1).
const HeaderLen = 10

// MaxData is the largest frame body a peer may send (ttrpc's
// messageLengthMax); larger frames are refused with ResourceExhausted.
const MaxData = 4 << 20

// Message types.
const (
	TypeRequest  uint8 = 1
	TypeResponse uint8 = 2
	TypeData     uint8 = 3
)

// Header is a decoded frame header.
type Header struct {
	Length   uint32
	StreamID uint32
	Type     uint8
	Flags    uint8
}

// ParseHeader decodes the first HeaderLen bytes of b.
func ParseHeader(b []byte) Header {
	_ = b[HeaderLen-1]
	return Header{
		Length:   binary.BigEndian.Uint32(b[0:4]),
		StreamID: binary.BigEndian.Uint32(b[4:8]),
		Type:     b[8],
		Flags:    b[9],
	}
}

// Put encodes h into the first HeaderLen bytes of b.
func (h Header) Put(b []byte) {
	_ = b[HeaderLen-1]
	binary.BigEndian.PutUint32(b[0:4], h.Length)
	binary.BigEndian.PutUint32(b[4:8], h.StreamID)
	b[8] = h.Type
	b[9] = h.Flags
}

// Field numbers of ttrpc's Request and Response messages (request.proto).
const (
	reqService     = 1
	reqMethod      = 2
	reqPayload     = 3
	reqTimeoutNano = 4
	reqMetadata    = 5

	respStatus  = 1
	respPayload = 2

	kvKey   = 1
	kvValue = 2
)

// Request is a decoded ttrpc Request envelope; the byte slices alias the
// frame it was parsed from.
type Request struct {
	Service     []byte
	Method      []byte
	Payload     []byte
	TimeoutNano int64
	// Metadata holds the raw KeyValue entries in order; most requests
	// have none, so they are decoded only on demand (see ForEachMetadata).
	Metadata [][]byte
}

// ErrMalformed reports bytes that are not a valid protobuf encoding of the
// expected envelope.
var ErrMalformed = errors.New("malformed protobuf")

// ParseRequest decodes a Request envelope from b into r, reusing r's
// Metadata slice. Unknown fields are skipped, as protobuf requires.
func ParseRequest(b []byte, r *Request) error {
	*r = Request{Metadata: r.Metadata[:0]}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("request: %w", ErrMalformed)
		}
		b = b[n:]
		switch {
		case num == reqTimeoutNano && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("request timeout: %w", ErrMalformed)
			}
			r.TimeoutNano = int64(v)
			b = b[n:]
		case (num == reqService || num == reqMethod || num == reqPayload || num == reqMetadata) && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("request field %d: %w", num, ErrMalformed)
			}
			switch num {
			case reqService:
				r.Service = v
			case reqMethod:
				r.Method = v
			case reqPayload:
				r.Payload = v
			case reqMetadata:
				r.Metadata = append(r.Metadata, v)
			}
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("request field %d: %w", num, ErrMalformed)
			}
			b = b[n:]
		}
	}
	return nil
}

// ForEachMetadata calls fn with the key and value of every metadata entry.
func (r *Request) ForEachMetadata(fn func(key, value string)) error {
	for _, kv := range r.Metadata {
		var key, value string
		for b := kv; len(b) > 0; {
			num, typ, n := protowire.ConsumeTag(b)
			if n < 0 {
				return fmt.Errorf("request metadata: %w", ErrMalformed)
			}
			b = b[n:]
			if (num == kvKey || num == kvValue) && typ == protowire.BytesType {
				v, n := protowire.ConsumeBytes(b)
				if n < 0 {
					return fmt.Errorf("request metadata: %w", ErrMalformed)
				}
				if num == kvKey {
					key = string(v)
				} else {
					value = string(v)
				}
				b = b[n:]
				continue
			}
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("request metadata: %w", ErrMalformed)
			}
			b = b[n:]
		}
		fn(key, value)
	}
	return nil
}

// KeyValue is one metadata entry to encode.
type KeyValue struct{ Key, Value string }

// AppendRequest appends a Request envelope whose payload is the
// pre-encoded payload.
func AppendRequest(dst []byte, service, method string, payload []byte, timeoutNano int64, md []KeyValue) []byte {
	return append(RequestPrefix(dst, service, method, timeoutNano, md, len(payload)), payload...)
}

// RequestPrefix appends a Request envelope up to its payload: every field,
// then the tag and length of a payload of payloadLen bytes, which the
// caller appends next (so a client can marshal the request message
// straight into the frame buffer).
func RequestPrefix(dst []byte, service, method string, timeoutNano int64, md []KeyValue, payloadLen int) []byte {
	dst = protowire.AppendTag(dst, reqService, protowire.BytesType)
	dst = protowire.AppendString(dst, service)
	dst = protowire.AppendTag(dst, reqMethod, protowire.BytesType)
	dst = protowire.AppendString(dst, method)
	if timeoutNano != 0 {
		dst = protowire.AppendTag(dst, reqTimeoutNano, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(timeoutNano))
	}
	for _, kv := range md {
		size := protowire.SizeTag(kvKey) + protowire.SizeBytes(len(kv.Key)) + protowire.SizeTag(kvValue) + protowire.SizeBytes(len(kv.Value))
		dst = protowire.AppendTag(dst, reqMetadata, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(size))
		dst = protowire.AppendTag(dst, kvKey, protowire.BytesType)
		dst = protowire.AppendString(dst, kv.Key)
		dst = protowire.AppendTag(dst, kvValue, protowire.BytesType)
		dst = protowire.AppendString(dst, kv.Value)
	}
	if payloadLen > 0 {
		dst = protowire.AppendTag(dst, reqPayload, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(payloadLen))
	}
	return dst
}

// ResponsePrefix appends the start of a Response envelope: the encoded
// google.rpc.Status (nil for OK, which is sent as an empty status, as the
// stock server does) and the tag and length of a payload of payloadLen
// bytes, which the caller appends next. The split lets a server marshal
// the reply message straight into the frame buffer.
func ResponsePrefix(dst []byte, status []byte, payloadLen int) []byte {
	dst = protowire.AppendTag(dst, respStatus, protowire.BytesType)
	dst = protowire.AppendBytes(dst, status)
	if payloadLen > 0 {
		dst = protowire.AppendTag(dst, respPayload, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(payloadLen))
	}
	return dst
}

// ParseResponse decodes a Response envelope: the encoded google.rpc.Status
// (empty for OK) and the payload, both aliasing b.
func ParseResponse(b []byte) (status, payload []byte, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, fmt.Errorf("response: %w", ErrMalformed)
		}
		b = b[n:]
		if (num == respStatus || num == respPayload) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, nil, fmt.Errorf("response field %d: %w", num, ErrMalformed)
			}
			if num == respStatus {
				status = v
			} else {
				payload = v
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, nil, fmt.Errorf("response field %d: %w", num, ErrMalformed)
		}
		b = b[n:]
	}
	return status, payload, nil
}
