package rpc

import (
	"context"
	"math"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/wren-vm/wren/agent/memagent"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// memAgentClient serves an agent with a mem-agent built on this
// machine's /proc (it needs PSI) and never run: the RPCs retune it, and
// its jobs, which would reclaim and compact this machine's memory, are
// the memagent package's to test.
func memAgentClient(t *testing.T) (agentpb.AgentServiceService, *memagent.Agent) {
	t.Helper()
	mem, err := memagent.New(memagent.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, New(Options{Guest: &GuestServices{MemAgent: mem}})), mem
}

// TestMemAgentSetRoundTrips: through the wire, what a request sets is
// what the mem-agent then runs with, and what it leaves unset keeps its
// value, earlier updates included.
func TestMemAgentSetRoundTrips(t *testing.T) {
	c, mem := memAgentClient(t)
	ctx := context.Background()
	if _, err := c.MemAgentMemcgSet(ctx, &agentpb.MemAgentMemcgConfig{Swap: proto.Bool(true), PeriodSecs: proto.Uint64(120)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.MemAgentMemcgSet(ctx, &agentpb.MemAgentMemcgConfig{SwappinessMax: proto.Uint32(30), EvictionRunAgingCountMin: proto.Uint64(5)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.MemAgentMemcgSet(ctx, &agentpb.MemAgentMemcgConfig{}); err != nil {
		t.Fatal(err)
	}
	wantM := memagent.DefaultMemcg()
	wantM.Swap, wantM.PeriodSecs, wantM.SwappinessMax, wantM.EvictionRunAgingCountMin = true, 120, 30, 5
	full := &agentpb.MemAgentCompactConfig{
		Disabled: proto.Bool(true), PeriodSecs: proto.Uint64(900), PeriodPsiPercentLimit: proto.Uint32(2),
		CompactPsiPercentLimit: proto.Uint32(10), CompactSecMax: proto.Int64(180), CompactOrder: proto.Uint32(10),
		CompactThreshold: proto.Uint64(4096), CompactForceTimes: proto.Uint64(math.MaxUint64),
	}
	if _, err := c.MemAgentCompactSet(ctx, full); err != nil {
		t.Fatal(err)
	}
	if _, err := c.MemAgentCompactSet(ctx, &agentpb.MemAgentCompactConfig{Disabled: proto.Bool(false), CompactForceTimes: proto.Uint64(0)}); err != nil {
		t.Fatal(err)
	}
	wantC := memagent.CompactConfig{PeriodSecs: 900, PeriodPSIPercentLimit: 2, CompactPSIPercentLimit: 10, CompactSecMax: 180, CompactOrder: 10, CompactThreshold: 4096}
	if m, cc := mem.Config(); m != wantM || cc != wantC {
		t.Fatalf("after the RPCs:\n%+v\n%+v\nwant\n%+v\n%+v", m, cc, wantM, wantC)
	}

	// Invalid values are InvalidArgument, and the request changes
	// nothing, not even its valid fields.
	for _, req := range []*agentpb.MemAgentMemcgConfig{
		{Swap: proto.Bool(false), SwappinessMax: proto.Uint32(201)},
		{Swap: proto.Bool(false), PeriodSecs: proto.Uint64(0)},
		{Swap: proto.Bool(false), PeriodPsiPercentLimit: proto.Uint32(101)},
		{Swap: proto.Bool(false), EvictionPsiPercentLimit: proto.Uint32(1 << 20)},
	} {
		if _, err := c.MemAgentMemcgSet(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("MemAgentMemcgSet %v: %v, want InvalidArgument", req, err)
		}
	}
	for _, req := range []*agentpb.MemAgentCompactConfig{
		{Disabled: proto.Bool(true), CompactSecMax: proto.Int64(-1)},
		{Disabled: proto.Bool(true), CompactOrder: proto.Uint32(16)},
		{Disabled: proto.Bool(true), PeriodSecs: proto.Uint64(math.MaxUint64)},
		{Disabled: proto.Bool(true), CompactPsiPercentLimit: proto.Uint32(300)},
	} {
		if _, err := c.MemAgentCompactSet(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("MemAgentCompactSet %v: %v, want InvalidArgument", req, err)
		}
	}
	if m, cc := mem.Config(); m != wantM || cc != wantC {
		t.Fatalf("refused requests changed the tuning:\n%+v\n%+v", m, cc)
	}
}

// TestMemAgentOffIsFailedPrecondition: without agent.mem_agent_enable
// there is no mem-agent to retune.
func TestMemAgentOffIsFailedPrecondition(t *testing.T) {
	c := serve(t, New(Options{}))
	ctx := context.Background()
	if _, err := c.MemAgentMemcgSet(ctx, &agentpb.MemAgentMemcgConfig{Swap: proto.Bool(true)}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("MemAgentMemcgSet: %v", err)
	}
	if _, err := c.MemAgentCompactSet(ctx, &agentpb.MemAgentCompactConfig{}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("MemAgentCompactSet: %v", err)
	}
}
