package stdio

import (
	"context"
	"sync"

	"github.com/wren-vm/wren/agent/replyhook"
)

// Reply buffers of at least minPooled bytes come from pools by size class
// when the server tells the handler that its reply has been written
// (replyhook): streaming output then allocates nothing per reply. Every
// reply buffer used to be garbage, and at 256 KiB replies the agent ran a
// GC cycle per MiB of output and page-faulted the heap it had just given
// back (docs/perf/stdout.md). sync.Pool drops idle buffers after two GC
// cycles, so a burst of output does not pin memory afterwards.
const minPooled = 16 << 10

var bufferClasses = [...]struct {
	size int
	pool *sync.Pool
}{
	{256 << 10, new(sync.Pool)},
	{MaxRead, new(sync.Pool)},
}

// replyBuffer returns a buffer of size bytes for a reply on ctx: pooled
// and returned to its pool after the reply has been written when ctx
// offers that hook, freshly allocated otherwise.
func replyBuffer(ctx context.Context, size int) []byte {
	if size < minPooled || !replyhook.Enabled(ctx) {
		return make([]byte, size)
	}
	for _, c := range bufferClasses {
		if size > c.size {
			continue
		}
		bp, _ := c.pool.Get().(*[]byte)
		if bp == nil {
			b := make([]byte, c.size)
			bp = &b
		}
		if !replyhook.AfterReply(ctx, func() { c.pool.Put(bp) }) {
			// The reply is gone already: the buffer is not put back,
			// since nothing tells when its reader is done with it.
			return make([]byte, size)
		}
		return (*bp)[:size]
	}
	return make([]byte, size)
}
