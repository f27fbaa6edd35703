package assemble

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wren-vm/wren/agent/config"
	"github.com/wren-vm/wren/agent/reaper"
	"github.com/wren-vm/wren/internal/testbundle"
	"github.com/wren-vm/wren/protocols/agentpb"
)

// TestNewWiresEveryPart checks that New leaves nothing for a caller to
// fill in: the guest services carry the sandbox's hooks and every service
// the handlers use.
func TestNewWiresEveryPart(t *testing.T) {
	cfg := config.Default()
	cfg.StateRoot = filepath.Join(t.TempDir(), "state")
	rp, err := reaper.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	a, err := New(Options{Config: cfg, Reaper: rp, NamespaceDir: filepath.Join(t.TempDir(), "ns")})
	if err != nil {
		t.Fatal(err)
	}
	g := a.Guest
	if a.Sandbox == nil || a.API == nil || g.Storage == nil || g.Devices == nil || g.Network == nil ||
		g.CopyFile == nil || g.Hotplug == nil || g.Metrics == nil || g.TerminationLog == nil || g.CPUsOnlined == nil {
		t.Fatalf("a part is missing: %+v %+v", a, g)
	}
	if _, err := g.TerminationLog("nope"); err == nil {
		t.Error("TerminationLog of an unknown container succeeded: not the sandbox's")
	}
	if g.MemAgent != nil {
		t.Error("a mem-agent runs though the configuration did not turn it on")
	}
}

// TestMemAgentLivesWithTheContext: turned on by the configuration, the
// mem-agent starts with its tuning, the API retunes it, and it stops when
// the agent's context ends. It runs on this machine's /proc with Kata's
// ten-minute periods, so no job of it runs during the test.
func TestMemAgentLivesWithTheContext(t *testing.T) {
	cfg := config.Default()
	cfg.StateRoot = filepath.Join(t.TempDir(), "state")
	cfg.MemAgentEnable = true
	order := uint32(10)
	cfg.MemAgentCompact.CompactOrder = &order
	rp, err := reaper.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := New(Options{Config: cfg, Reaper: rp, NamespaceDir: filepath.Join(t.TempDir(), "ns"), Context: ctx})
	if err != nil {
		t.Fatal(err)
	}
	mem := a.Guest.MemAgent
	if mem == nil {
		t.Fatal("agent.mem_agent_enable did not start a mem-agent")
	}
	swap := true
	if _, err := a.API.MemAgentMemcgSet(ctx, &agentpb.MemAgentMemcgConfig{Swap: &swap}); err != nil {
		t.Fatal(err)
	}
	if m, c := mem.Config(); !m.Swap || c.CompactOrder != 10 {
		t.Errorf("tuning %+v %+v: want the configuration's order and the API's swap", m, c)
	}
	select {
	case <-mem.Done():
		t.Fatal("the mem-agent stopped before its context ended")
	default:
	}
	cancel()
	<-mem.Done()
}

// TestAfterDestroyRunsOnceTheSandboxIsGone: AfterDestroy (as PID 1: end
// the agent, power the VM off) runs after a DestroySandbox that succeeded,
// and not after one that failed.
func TestAfterDestroyRunsOnceTheSandboxIsGone(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("CreateSandbox makes namespaces and a cgroup: needs root")
	}
	cfg := config.Default()
	cfg.StateRoot = filepath.Join(t.TempDir(), "state")
	cfg.CgroupParent = fmt.Sprintf("wren-assemble-%d", os.Getpid())
	defer testbundle.RemoveCgroupParent(cfg.CgroupParent)
	rp, err := reaper.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	called := make(chan struct{}, 2)
	a, err := New(Options{Config: cfg, Reaper: rp, NamespaceDir: filepath.Join(t.TempDir(), "ns"), AfterDestroy: func() { called <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := a.API.DestroySandbox(ctx, &agentpb.DestroySandboxRequest{}); err == nil {
		t.Fatal("DestroySandbox before CreateSandbox succeeded")
	}
	if _, err := a.API.CreateSandbox(ctx, &agentpb.CreateSandboxRequest{Hostname: "assemble"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-called:
		t.Fatal("AfterDestroy ran after a DestroySandbox that failed")
	default:
	}
	if _, err := a.API.DestroySandbox(ctx, &agentpb.DestroySandboxRequest{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-called:
	case <-time.After(10 * time.Second):
		t.Fatal("AfterDestroy did not run after DestroySandbox")
	}
}
