// Package replyhook lets an RPC handler run code once its reply has been
// written, which is when buffers the reply points into may be reused.
//
// A handler returns its response and the server marshals it afterwards,
// so a handler that hands out a pooled buffer (ReadStdout's data) cannot
// know when the buffer is free again. A server that supports this package
// wraps each call's context with With and runs the returned function after
// the reply is on the wire; a handler registers with AfterReply. Under a
// server that does not (containerd/ttrpc's own, which marshals after the
// interceptors return), AfterReply reports false and the handler must
// allocate as before.
package replyhook

import (
	"context"
	"sync"
)

type key struct{}

type hooks struct {
	mu   sync.Mutex
	done bool
	fns  []func()
}

// With returns a context on which handlers can register functions, and the
// function the server calls once the reply has been written (or has
// failed): it runs the registered functions in order, once.
func With(ctx context.Context) (context.Context, func()) {
	h := &hooks{}
	return context.WithValue(ctx, key{}, h), h.run
}

func (h *hooks) run() {
	h.mu.Lock()
	fns := h.fns
	h.fns, h.done = nil, true
	h.mu.Unlock()
	for _, f := range fns {
		f()
	}
}

// Enabled reports whether ctx comes from a server that runs AfterReply
// functions, and the reply has not been written yet.
func Enabled(ctx context.Context) bool {
	h, ok := ctx.Value(key{}).(*hooks)
	if !ok {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.done
}

// AfterReply registers f to run once the reply of the call that ctx
// belongs to has been written. It reports false, and never runs f, when
// the server offers no such hook or the reply is already gone.
func AfterReply(ctx context.Context, f func()) bool {
	h, ok := ctx.Value(key{}).(*hooks)
	if !ok {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done {
		return false
	}
	h.fns = append(h.fns, f)
	return true
}
