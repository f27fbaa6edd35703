package assemble

import (
	"path/filepath"
	"testing"

	"github.com/wren-vm/wren/agent/config"
	"github.com/wren-vm/wren/agent/reaper"
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
}
