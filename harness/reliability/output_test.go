package reliability

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/wren-vm/wren/protocols/agentpb"
)

// TestLargeOutputArrivesWhole: megabytes of container output read through
// the real agent's server (which splices large reads from the pipe into the
// socket) arrive whole and in order, with Kata's 32 KiB reads and with
// 1 MiB reads, and reading them leaves nothing behind in the agent.
func TestLargeOutputArrivesWhole(t *testing.T) {
	p := newPod(t)
	base := p.warmBaseline()
	const lines = 400000 // about 2.7 MB of `seq` output
	var want strings.Builder
	for i := 1; i <= lines; i++ {
		fmt.Fprintf(&want, "%d\n", i)
	}
	for _, readLen := range []uint32{32 << 10, 1 << 20} {
		id := fmt.Sprintf("seq%d", readLen)
		p.run(id, p.spec("/bin/seq", "1", fmt.Sprint(lines)))
		var got strings.Builder
		for {
			rc, cancel := context.WithTimeout(ctx(t), 20*time.Second)
			r, err := p.c.Agent.ReadStdout(rc, &agentpb.ReadStreamRequest{ContainerId: id, ExecId: id, Len: readLen})
			cancel()
			if err != nil {
				t.Fatalf("Len %d: ReadStdout after %d bytes: %v", readLen, got.Len(), err)
			}
			if len(r.Data) == 0 {
				break
			}
			if len(r.Data) > int(readLen) {
				t.Fatalf("Len %d: a reply of %d bytes", readLen, len(r.Data))
			}
			got.Write(r.Data)
		}
		if got.String() != want.String() {
			g, w := got.String(), want.String()
			i := 0
			for i < len(g) && i < len(w) && g[i] == w[i] {
				i++
			}
			t.Fatalf("Len %d: got %d bytes, want %d; they differ from byte %d", readLen, len(g), len(w), i)
		}
		if _, err := p.c.Agent.WaitProcess(ctx(t), &agentpb.WaitProcessRequest{ContainerId: id, ExecId: id}); err != nil {
			t.Fatalf("wait %s: %v", id, err)
		}
		if err := p.remove(id); err != nil {
			t.Fatalf("remove %s: %v", id, err)
		}
	}
	p.checkBaseline("after reading the outputs", base)
}
