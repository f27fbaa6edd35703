package client

import (
	"context"
	"fmt"
	"io"
	"math"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/wren-vm/wren/lib/wire"
)

// maxStreamBuffer bounds ReadStream's reply buffer: the largest frame body
// ttrpc allows.
const maxStreamBuffer = wire.MaxData

// ReadStream reads the next chunk of a container process's stdout (or,
// with stderr, its stderr) with one ReadStdout (ReadStderr) call asking
// for up to maxLen bytes; maxLen ≤ 0 sends Len 0, which leaves the size
// to the agent. At the end of the stream (the agent's empty reply) it
// returns nil, io.EOF. A reply with an error status returns that status,
// as Call does, and a context that ends interrupts the call and breaks
// the connection, as with Call.
//
// It is the loop body of a shim-like reader, and it allocates nothing per
// reply: the request is encoded and the reply decoded by hand, and the
// reply is read into a buffer the Sync keeps. The returned slice aliases
// that buffer, so it is valid only until the next ReadStream on this
// Sync (Call uses a buffer of its own); copy it or write it out first.
// As every call on a Sync waits for the one before it, give each stream
// its own Sync (a stderr read waiting behind a blocked stdout read would
// stall both).
//
// The buffer grows once, to the reply that maxLen allows, and is kept
// until the Sync is dropped: a reader asking for 1 MiB holds about 1 MiB.
// A reply larger than both that and 64 KiB (which a well-behaved agent
// never sends) is read into a buffer of its own and not kept, so a Sync
// never keeps more than 4 MiB (ttrpc's frame limit).
func (c *Sync) ReadStream(ctx context.Context, stderr bool, containerID, execID string, maxLen int) ([]byte, error) {
	method := "ReadStdout"
	if stderr {
		method = "ReadStderr"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	data, err := c.readStream(ctx, method, containerID, execID, maxLen)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("%s/%s: %w", agentService, method, err)
	}
	return data, err
}

const agentService = "grpc.AgentService"

func (c *Sync) readStream(ctx context.Context, method, containerID, execID string, maxLen int) ([]byte, error) {
	if err := c.ready(ctx); err != nil {
		return nil, err
	}
	length := uint32(min(uint64(max(maxLen, 0)), math.MaxUint32))
	b := c.requestPrefix(ctx, agentService, method, readStreamRequestSize(containerID, execID, length))
	b = appendReadStreamRequest(b, containerID, execID, length)

	want := maxKeptFrame
	if maxLen > 0 {
		want = streamReplySize(min(maxLen, maxStreamBuffer))
	}
	c.sbuf.grow = want
	c.sbuf.keep = min(maxStreamBuffer, max(want, maxKeptFrame))
	payload, err := c.roundTrip(ctx, b, &c.sbuf)
	if err != nil {
		return nil, err
	}
	data, err := parseReadStreamResponse(payload)
	if err != nil {
		return nil, fmt.Errorf("decode reply: %w", err)
	}
	if len(data) == 0 {
		return nil, io.EOF
	}
	return data, nil
}

// Field numbers of grpc.ReadStreamRequest and grpc.ReadStreamResponse
// (agent.proto).
const (
	readStreamContainerID = 1
	readStreamExecID      = 2
	readStreamLen         = 3

	readStreamData = 1
)

// readStreamRequestSize is the encoded size of a ReadStreamRequest.
func readStreamRequestSize(containerID, execID string, length uint32) int {
	n := 0
	if containerID != "" {
		n += protowire.SizeTag(readStreamContainerID) + protowire.SizeBytes(len(containerID))
	}
	if execID != "" {
		n += protowire.SizeTag(readStreamExecID) + protowire.SizeBytes(len(execID))
	}
	if length != 0 {
		n += protowire.SizeTag(readStreamLen) + protowire.SizeVarint(uint64(length))
	}
	return n
}

// appendReadStreamRequest appends a ReadStreamRequest encoded as proto3
// does it (fields in order, defaults left out), without building the
// message.
func appendReadStreamRequest(b []byte, containerID, execID string, length uint32) []byte {
	if containerID != "" {
		b = protowire.AppendTag(b, readStreamContainerID, protowire.BytesType)
		b = protowire.AppendString(b, containerID)
	}
	if execID != "" {
		b = protowire.AppendTag(b, readStreamExecID, protowire.BytesType)
		b = protowire.AppendString(b, execID)
	}
	if length != 0 {
		b = protowire.AppendTag(b, readStreamLen, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(length))
	}
	return b
}

// streamReplySize is the size of the Response envelope carrying a
// ReadStreamResponse with n bytes of data (and an empty OK status, as
// servers send it).
func streamReplySize(n int) int {
	inner := protowire.SizeTag(readStreamData) + protowire.SizeBytes(n)
	return protowire.SizeTag(1) + protowire.SizeBytes(0) + protowire.SizeTag(2) + protowire.SizeBytes(inner)
}

// parseReadStreamResponse returns the data of an encoded
// ReadStreamResponse, aliasing b. It decodes as the protobuf runtime
// does: unknown fields are skipped, a data field with another wire type
// counts as unknown, and of several data fields the last one wins.
func parseReadStreamResponse(b []byte) ([]byte, error) {
	var data []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("ReadStreamResponse: %w", protowire.ParseError(n))
		}
		if !num.IsValid() {
			// ConsumeTag lets numbers above 2^29-1 through.
			return nil, fmt.Errorf("ReadStreamResponse: field number %d out of range", num)
		}
		b = b[n:]
		if num == readStreamData && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, fmt.Errorf("ReadStreamResponse data: %w", protowire.ParseError(n))
			}
			data = v
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, fmt.Errorf("ReadStreamResponse field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return data, nil
}
