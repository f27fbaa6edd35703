package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/wren-vm/wren/harness/testagent"
)

// TestCompactHookRunsFirst: the agent's binary started as the mem-agent's
// compaction child writes 1 to the file it is given (compact_memory in
// the guest; a plain file here, not to compact this shared machine) and
// exits, before configuration or PID 1 duties could get in its way.
func TestCompactHookRunsFirst(t *testing.T) {
	f := filepath.Join(t.TempDir(), "compact_memory")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(testagent.Binary(t, "wren-agent"), "memagent-compact", f).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if b, _ := os.ReadFile(f); string(b) != "1" {
		t.Fatalf("the child wrote %q, want 1", b)
	}
}
