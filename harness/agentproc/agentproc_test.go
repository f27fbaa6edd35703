package agentproc_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wren-vm/wren/harness/agentproc"
	"github.com/wren-vm/wren/harness/client"
	"github.com/wren-vm/wren/harness/testagent"
	"github.com/wren-vm/wren/protocols/agentpb"
)

func TestStartServesAndStopEnds(t *testing.T) {
	dir := t.TempDir()
	parent := fmt.Sprintf("wren-agentproc-test-%d", os.Getpid())
	p, err := agentproc.Start(context.Background(), agentproc.Options{
		Bin:          testagent.Binary(t, "wren-agent"),
		Dir:          dir,
		CgroupParent: "ignored-for-the-last",
		Args:         []string{"--cgroup-parent", parent},
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.Addr != "unix://"+filepath.Join(dir, "agent.sock") || p.StateRoot != filepath.Join(dir, "state") {
		t.Errorf("Addr %s, StateRoot %s", p.Addr, p.StateRoot)
	}
	if p.CgroupParent != parent {
		t.Errorf("CgroupParent = %q, want the last one given", p.CgroupParent)
	}
	c, err := client.Dial(context.Background(), p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Health.Check(context.Background(), &agentpb.CheckRequest{}); err != nil {
		t.Errorf("Check: %v", err)
	}
	c.Close()
	if err := p.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("Stop returned before the agent exited")
	}
	if !p.Cmd.ProcessState.Exited() {
		t.Errorf("agent ended by %v, want an exit after SIGTERM", p.Cmd.ProcessState)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestStartReportsAnEarlyExit(t *testing.T) {
	_, err := agentproc.Start(context.Background(), agentproc.Options{
		Bin:  testagent.Binary(t, "wren-agent"),
		Dir:  t.TempDir(),
		Args: []string{"--no-such-flag"},
	})
	if err == nil || !strings.Contains(err.Error(), "exited before serving") {
		t.Fatalf("Start with a bad flag: %v", err)
	}
}

func TestStartMissingBinary(t *testing.T) {
	_, err := agentproc.Start(context.Background(), agentproc.Options{Bin: filepath.Join(t.TempDir(), "none"), Dir: t.TempDir()})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Start of a missing binary: %v", err)
	}
}
