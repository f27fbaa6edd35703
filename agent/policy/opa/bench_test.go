package opa

import (
	"context"
	"testing"

	"github.com/wren-vm/wren/agent/policy"
	"github.com/wren-vm/wren/agent/policy/kataref"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// BenchmarkAllowAllCheck: the fixed cost of one policy check (a request
// Kata's allow-all allows by default).
func BenchmarkAllowAllCheck(b *testing.B) {
	p := policy.New(Engine{}, policy.DefaultLimits, nil)
	if err := p.Load(context.Background(), kataref.AllowAll); err != nil {
		b.Fatal(err)
	}
	req := &agentpb.GuestDetailsRequest{MemBlockSize: true}
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Check(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}
