// Package replysplice lets an RPC handler have the last field of its reply
// sent straight from a pipe to the connection, so that streamed output
// (ReadStdout's data) never passes through the agent's memory.
//
// Without it every byte of container output is read from the pipe into a
// buffer, marshalled into a frame and written to the socket: two copies in
// user space and a buffer per reply, which made the agent's CPU the limit
// of figure 7 (docs/perf/stdout.md). With it the server writes the frame up
// to the field's tag and length and then splice(2)s the bytes from the pipe
// to the socket.
//
// Three parties take part, each knowing only its own part:
//   - a server that can splice to its connection wraps a call's context with
//     With, sends the reply with the Tail it gets back, and calls Tail.Done
//     once the reply is written (or has failed);
//   - the handler that builds the reply message names the bytes field the
//     tail fills with Accept (the field must be left empty in the message);
//   - the code that owns the pipe hands over n bytes it holds with Offer.
//
// Under a server that does not splice (containerd/ttrpc's own, or a
// connection that is not a socket) Offer reports false and the data is read
// as before.
package replysplice

import (
	"context"
	"sync"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"
)

type key struct{}

// Tail is one call's spliced reply field, owned by the server.
type Tail struct {
	mu      sync.Mutex
	field   protowire.Number // 0 until Accept
	fd      int              // the offered pipe (a dup owned here), or -1
	n       int
	release func()
	done    bool
}

// With returns a context on which a handler can offer a reply tail, and
// the Tail the server sends the reply with.
func With(ctx context.Context) (context.Context, *Tail) {
	t := &Tail{fd: -1}
	return context.WithValue(ctx, key{}, t), t
}

func from(ctx context.Context) *Tail {
	t, _ := ctx.Value(key{}).(*Tail)
	return t
}

// Accept declares that the reply message of the call on ctx leaves its
// bytes field number field empty, for an offered tail to fill. A later
// Accept replaces an earlier one; without a splicing server it does nothing.
func Accept(ctx context.Context, field protowire.Number) {
	if t := from(ctx); t != nil {
		t.mu.Lock()
		if !t.done && t.fd < 0 {
			t.field = field
		}
		t.mu.Unlock()
	}
}

// Wanted reports whether an Offer on ctx could be taken: the server splices
// and the handler accepted a field. Pipe owners check it before they give up
// on reading the data themselves.
func Wanted(ctx context.Context) bool {
	t := from(ctx)
	if t == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.done && t.field != 0 && t.fd < 0
}

// Offer hands the server n bytes that the pipe pipeFd holds now, to be sent
// as the accepted field. The caller must keep every other reader off the
// pipe until release runs, so the bytes are still there when the reply is
// written; release runs exactly once, after the reply is written or has
// failed (in which case the bytes may still be in the pipe). Offer takes a
// duplicate of pipeFd, so the caller may close its own descriptor meanwhile.
// It reports false, and never runs release, when there is no tail to fill
// (no splicing server, no Accept, one offer already made, or the reply gone)
// or the duplicate cannot be made; the caller then reads the data itself.
func Offer(ctx context.Context, pipeFd, n int, release func()) bool {
	t := from(ctx)
	if t == nil || n <= 0 {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done || t.field == 0 || t.fd >= 0 {
		return false
	}
	fd, err := unix.FcntlInt(uintptr(pipeFd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return false
	}
	t.fd, t.n, t.release = fd, n, release
	return true
}

// Take returns what the handler offered: the field, a descriptor to splice
// from (valid until Done) and the byte count. ok is false when nothing was
// offered (or t is nil: the server does not splice). After Take no further
// offer is accepted.
func (t *Tail) Take() (field protowire.Number, fd, n int, ok bool) {
	if t == nil {
		return 0, -1, 0, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done = true
	if t.fd < 0 {
		return 0, -1, 0, false
	}
	return t.field, t.fd, t.n, true
}

// Done ends the call's tail: it closes the duplicate descriptor and runs
// the offer's release. The server calls it once the reply has been
// written or has failed, whether or not it used the tail.
func (t *Tail) Done() {
	t.mu.Lock()
	t.done = true
	fd, release := t.fd, t.release
	t.fd, t.release = -1, nil
	t.mu.Unlock()
	if fd >= 0 {
		unix.Close(fd)
	}
	if release != nil {
		release()
	}
}
